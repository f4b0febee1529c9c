// Types of '@tandem/client/state' (src/state.js): the pure OT state machine.
export {
  ClientState,
  ClientStateJSON,
  Inflight,
  MERGE_AT,
  MergeMessage,
  Merging,
  OpMessage,
  positionInverse,
  transformCursor,
} from '../index.js';
