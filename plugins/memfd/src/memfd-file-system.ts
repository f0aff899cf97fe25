import { File, type ModuleContext, type ServiceKey } from '@liveupdate/kernel';
import { F_SEAL_SEAL, MFD_ALLOW_SEALING, O_RDWR } from '@liveupdate/machine';
import { memfdFileOperations } from './memfd-file-operations.js';
import { MemfdInode } from './memfd-inode.js';

/**
 * The key under which the memfd module offers its {@link MemfdFileSystem} to the modules loaded
 * after it (`ctx.services.get(MEMFD_SERVICE)`), e.g. to recognise memfds and reach their folios.
 */
export const MEMFD_SERVICE: ServiceKey<MemfdFileSystem> = Symbol.for('liveupdate.memfd');

/**
 * The memfds of one boot (shmem's internal mount): makes inodes, numbered from 1 in each boot, and
 * files on them. Created by the module's `init`; nothing of it outlives the kernel.
 */
export class MemfdFileSystem {
  /** The module context of the memfd module in this boot. */
  readonly context: ModuleContext;
  #nextInodeId = 1;

  constructor(context: ModuleContext) {
    this.context = context;
  }

  /**
   * `memfd_alloc_file(name, flags)`: a new memfd, opened `O_RDWR`, holding one reference. Without
   * `MFD_ALLOW_SEALING` it starts sealed with `F_SEAL_SEAL`, so no seal can ever be added.
   */
  create(name: string, flags: number): File {
    const inode = this.createInode(name, flags);
    if (!(flags & MFD_ALLOW_SEALING)) inode.seals = F_SEAL_SEAL;
    return this.open(inode);
  }

  /** A new, empty, unsealed inode; give it a file with {@link open}. */
  createInode(name: string, flags: number): MemfdInode {
    return new MemfdInode(
      this.#nextInodeId++,
      name,
      flags,
      this.context.pages,
      this.context.memory,
    );
  }

  /** A new file on `inode` (`O_RDWR`, one reference); the inode lives until its last file goes. */
  open(inode: MemfdInode): File {
    inode.openFiles++;
    return new File(`/memfd:${inode.name}`, memfdFileOperations, O_RDWR, inode);
  }

  /** The inode of `file` when it is a memfd, else `undefined`. */
  inodeOf(file: File): MemfdInode | undefined {
    return file.fops === memfdFileOperations && file.privateData instanceof MemfdInode
      ? file.privateData
      : undefined;
  }
}
