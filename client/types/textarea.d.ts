// Types of '@tandem/client/textarea' (src/bindings/textarea.js): the <textarea>/<input> binding.
export { Binding, bindTextarea, diffText } from '../index.js';
