export { memfdModule as default } from './memfd-module.js';
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
export { createMemfdLuoHandler } from './memfd-luo-handler.js';
export {
  MAX_PRESERVED_PAGES,
  readPreservedMemfd,
  type PreservedFolio,
  type PreservedMemfd,
} from './memfd-luo-reader.js';
export {
  MEMFD_LUO_ALL_SEALS,
  MEMFD_LUO_FH_COMPATIBLE,
  MEMFD_LUO_FOLIO_DIRTY,
  MEMFD_LUO_FOLIO_UPTODATE,
  khoVmallocSer,
  memfdLuoFolioSer,
  memfdLuoSer,
  packPfnFlags,
  unpackPfnFlags,
} from './memfd-luo-abi.js';
