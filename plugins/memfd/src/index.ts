export { memfdModule as default, createMemfdModule } from './memfd-module.js';
export { MFD_NAME_MAX_LEN } from './memfd-create.js';
export { MappedMemfd, type MappedMemfdOptions } from './mapped-memfd.js';
export { F_ALL_SEALS, memfdFileOperations } from './memfd-file-operations.js';
export { MEMFD_SERVICE, MemfdFileSystem } from './memfd-file-system.js';
export {
  MEMFD_MAX_FOLIO_ORDER,
  MemfdInode,
  pagesFor,
  type MemfdFolio,
  type MemfdSegment,
} from './memfd-inode.js';
export { createMemfdLuoHandler, type MemfdHandlerFormats } from './memfd-luo-handler.js';
export {
  MAX_PRESERVED_PAGES,
  type MemfdReadContext,
  type PreservedMemfd,
  type PreservedRun,
} from './memfd-format.js';
export { readPreservedMemfd } from './memfd-formats.js';
export {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_FH_COMPATIBLE,
  MEMFD_LUO_FH_COMPATIBLE_V2,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  khoVmallocSer,
  memfdLuoFolioSer,
  memfdLuoRunSer,
  memfdLuoSer,
  memfdLuoSerV3,
  packPfnFlags,
  unpackPfnFlags,
} from './memfd-luo-abi.js';
