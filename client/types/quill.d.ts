// Types of '@tandem/client/quill' (src/bindings/quill.js): the Quill 2 binding.
export { Binding, bindQuill, editorToDoc } from '../index.js';
