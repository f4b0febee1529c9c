// The demo loads Quill's UMD build, which bundles quill-delta; the import map
// points `quill-delta` here so the client uses that very Delta class (the npm
// package itself is CommonJS and cannot be imported by a browser as is).
export default globalThis.Quill.import('delta');
