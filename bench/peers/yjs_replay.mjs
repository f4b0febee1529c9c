// Replay an editing trace into a Yjs Y.Text, one transaction per patch, the way
// bench/ot_replay.py replays it into Tandem: the Yjs baseline for the OT core.
//
//   node bench/peers/yjs_replay.mjs bench/traces/automerge-paper.json.gz [repeat]
//
// Prints one JSON line: {"patches", "cpu": [seconds per run], "wall": [...]}.
// CPU is this process's user+system time (process.cpuUsage), as Python's
// time.process_time; the final text must equal endContent (UTF-16 offsets, so
// only ASCII traces are comparable with Tandem's code points).
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import * as Y from 'yjs'

const [path, repeatArg] = process.argv.slice(2)
const repeat = Number(repeatArg ?? 3)
const data = JSON.parse(gunzipSync(readFileSync(path)).toString('utf8'))
const patches = data.txns.flatMap((txn) => txn.patches)

function replay () {
  const doc = new Y.Doc()
  const text = doc.getText('text')
  if (data.startContent) text.insert(0, data.startContent)
  for (const [pos, deleted, inserted] of patches) {
    doc.transact(() => {
      if (deleted) text.delete(pos, deleted)
      if (inserted) text.insert(pos, inserted)
    })
  }
  return text.toString()
}

const cpu = []
const wall = []
for (let i = 0; i < repeat; i++) {
  const started = process.cpuUsage()
  const begin = process.hrtime.bigint()
  const result = replay()
  const used = process.cpuUsage(started)
  wall.push(Number(process.hrtime.bigint() - begin) / 1e9)
  cpu.push((used.user + used.system) / 1e6)
  if (result !== data.endContent) {
    console.error('yjs replay does not reproduce endContent')
    process.exit(1)
  }
}
console.log(JSON.stringify({ patches: patches.length, cpu, wall }))
