import { describe, expect, it } from 'vitest';
import { eventfdLuoSer } from './eventfd-luo-abi.js';

describe('the eventfd-v1 layout', () => {
  it('places eventfd_luo_ser fields at the documented offsets', () => {
    expect(eventfdLuoSer.size).toBe(16);
    expect(eventfdLuoSer.offsets).toEqual({ count: 0, flags: 8, reserved: 12 });
  });

  it('round-trips eventfd_luo_ser, little-endian', () => {
    const value = { count: 0x0102_0304_0506_0708n, flags: 0x801, reserved: 0 };
    const bytes = eventfdLuoSer.encode(value);
    expect(eventfdLuoSer.decode(bytes)).toEqual(value);
    expect([...bytes]).toEqual([8, 7, 6, 5, 4, 3, 2, 1, 0x01, 0x08, 0, 0, 0, 0, 0, 0]);
  });
});
