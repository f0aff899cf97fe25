// The entry point of a device's worker: one per device, started with the machine. It runs the
// device model in a loop over shared buffers only; it takes no messages and lives until the machine
// shuts down, across every kexec.
import { workerData } from 'node:worker_threads';
import { PhysicalMemory } from '../physical-memory.js';
import { DmaCopyDevice } from './dma-copy-device.js';
import { DmaCounterBlock } from './dma-counters.js';
import { DmaEngine } from './dma-engine.js';
import type { DeviceWorkerData } from './machine-hardware.js';
import { IommuRegisters } from './iommu.js';
import { NicDevice } from './nic-device.js';
import { PciFunction } from './pci-function.js';

const data = workerData as DeviceWorkerData;
const spec = data.mmio.functions[data.index]!;
const fn = new PciFunction(spec);
const dma = new DmaEngine(
  fn,
  new PhysicalMemory(data.ram),
  new IommuRegisters(data.mmio.iommu, []),
  new DmaCounterBlock(data.mmio.counters),
  data.index,
);
const step =
  spec.kind === 'nic'
    ? (
        (nic) => () =>
          nic.step(performance.now())
      )(new NicDevice(dma, spec.packetsPerSecond))
    : (
        (engine) => () =>
          engine.step(performance.now())
      )(new DmaCopyDevice(dma, spec.copiesPerSecond));
const tick = new Int32Array(new SharedArrayBuffer(4));
for (;;) {
  step();
  Atomics.wait(tick, 0, 0, 1);
}
