// The package as npm would publish it: `npm pack`, installed into an empty
// project (without `ws`, an optional peer), then every subpath export imported.
// Every value its types declare must exist at run time, every runtime export
// must be declared, and the declarations must type-check (TypeScript's own
// checker, for both "nodenext" and "bundler" resolution).
import test, { before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const CLIENT = fileURLToPath(new URL('../', import.meta.url));
const pkg = JSON.parse(readFileSync(join(CLIENT, 'package.json'), 'utf8'));
const subpaths = Object.keys(pkg.exports).filter((s) => s !== './package.json');
let project;
let packed;

before(() => {
  project = mkdtempSync(join(tmpdir(), 'tandem-pack-'));
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', project], { cwd: CLIENT, encoding: 'utf8' });
  packed = JSON.parse(out.slice(out.indexOf('[')))[0];
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  execFileSync('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error', join(project, packed.filename)], {
    cwd: project,
    stdio: 'inherit',
  });
});
after(() => project && rmSync(project, { recursive: true, force: true }));

const installed = () => join(project, 'node_modules', '@tandem', 'client');

test('npm pack: publishable, with exactly the files a user needs', () => {
  assert.equal(pkg.private, undefined, 'not private');
  assert.equal(pkg.license, 'MIT');
  assert.ok(pkg.repository?.url, 'a repository');
  const files = packed.files.map((f) => f.path).sort();
  for (const needed of ['LICENSE', 'README.md', 'package.json', 'index.d.ts', 'dist/tandem-client.js', 'src/index.js']) {
    assert.ok(files.includes(needed), `${needed} in ${files}`);
  }
  for (const sub of subpaths) {
    const { types, default: js } = pkg.exports[sub];
    assert.ok(files.includes(types.slice(2)) && files.includes(js.slice(2)), `${sub}: ${types}, ${js} packed`);
  }
  assert.deepEqual(files.filter((f) => /^(test|demo|bench|node_modules)\//.test(f)), []);
});

test('ws is optional: not installed with the package, needed only by Node without a WebSocket', () => {
  assert.equal(pkg.dependencies.ws, undefined);
  assert.equal(pkg.peerDependenciesMeta.ws.optional, true);
  assert.ok(!existsSync(join(project, 'node_modules', 'ws')), 'ws was not installed');
});

/** The value (not type-only) names a types file exports, by TypeScript's checker. */
function declaredValues(typesFile, moduleResolution) {
  const program = ts.createProgram([typesFile], {
    noEmit: true,
    strict: true,
    module: moduleResolution === 'bundler' ? ts.ModuleKind.ESNext : ts.ModuleKind.NodeNext,
    moduleResolution: moduleResolution === 'bundler' ? ts.ModuleResolutionKind.Bundler : ts.ModuleResolutionKind.NodeNext,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
    types: [],
  });
  const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
  assert.deepEqual(diagnostics, [], `${typesFile} type-checks`);
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(typesFile);
  return checker
    .getExportsOfModule(checker.getSymbolAtLocation(source))
    .filter((s) => {
      const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
      return target.flags & ts.SymbolFlags.Value;
    })
    .map((s) => s.name)
    .sort();
}

for (const sub of subpaths) {
  test(`${sub}: every declared value exists at run time, and every runtime export is declared`, async () => {
    const entry = pkg.exports[sub];
    const runtime = Object.keys(await import(pathToFileURL(join(installed(), entry.default)))).sort();
    for (const resolution of ['nodenext', 'bundler']) {
      assert.deepEqual(declaredValues(join(installed(), entry.types), resolution), runtime, `${sub} (${resolution})`);
    }
    // and the bare specifier resolves through the package's own exports map
    const name = sub === '.' ? pkg.name : `${pkg.name}/${sub.slice(2)}`;
    const viaExports = execFileSync('node', ['--input-type=module', '-e', `import * as m from '${name}'; console.log(Object.keys(m).length)`], {
      cwd: project,
      encoding: 'utf8',
    });
    assert.equal(Number(viaExports), runtime.length);
  });
}

test('a TypeScript consumer of every subpath compiles', () => {
  const consumer = join(project, 'consumer.ts');
  writeFileSync(
    consumer,
    `import { TandemClient, Delta, bindQuill, type TandemDoc } from '@tandem/client';
import { ClientState, MERGE_AT } from '@tandem/client/state';
import { toUtf16, hasSurrogates, EMBED } from '@tandem/client/utf16';
import { bindQuill as bq } from '@tandem/client/quill';
import { bindTextarea, diffText } from '@tandem/client/textarea';
import * as bundle from '@tandem/client/browser';
const client: TandemClient = new TandemClient({ url: 'ws://localhost:8080/collab', token: 't' });
const doc: TandemDoc = client.open('notes');
const d: Delta = new Delta().insert('x');
const n: number = MERGE_AT + toUtf16(d, 'x').length() + EMBED.length;
const ok: boolean = hasSurrogates('x') && bq === bindQuill && typeof ClientState === 'function';
const ops = diffText('a', 'ab');
export { doc, n, ok, ops, bindTextarea, bundle };
`,
  );
  for (const resolution of ['nodenext', 'bundler']) {
    const program = ts.createProgram([consumer], {
      noEmit: true,
      strict: true,
      module: resolution === 'bundler' ? ts.ModuleKind.ESNext : ts.ModuleKind.NodeNext,
      moduleResolution: resolution === 'bundler' ? ts.ModuleResolutionKind.Bundler : ts.ModuleResolutionKind.NodeNext,
      lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'],
      types: [],
    });
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
    assert.deepEqual(diagnostics, [], resolution);
  }
});
