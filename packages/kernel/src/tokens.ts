import type { InjectionToken } from 'tsyringe';
import type { PhysicalMemory } from '@liveupdate/machine';
import type { BootParams } from './boot-params.js';
import type { KhoIncoming } from './kho/kho-incoming.js';
import type { MemoryLayout } from './memory-layout.js';

/** DI tokens of values a kernel boot registers in its container (classes are their own tokens). */
export const BOOT_PARAMS: InjectionToken<BootParams> = Symbol('BootParams');
export const PHYSICAL_MEMORY: InjectionToken<PhysicalMemory> = Symbol('PhysicalMemory');
export const MEMORY_LAYOUT: InjectionToken<MemoryLayout> = Symbol('MemoryLayout');
/** What the previous kernel handed over through KHO, or `null` on a cold boot. */
export const KHO_INCOMING: InjectionToken<KhoIncoming | null> = Symbol('KhoIncoming');
