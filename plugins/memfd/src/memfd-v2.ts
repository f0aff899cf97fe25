// `@liveupdate/plugin-memfd/memfd-v2`: the module a kernel image lists to stand for the memfd
// plugin of kernel 6.18.0, which reads and writes memfd-v2 only.
export { memfdV2Module as default } from './memfd-module.js';
