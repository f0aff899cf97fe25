import { describe, expect, it } from 'vitest';
import { GLOSSARY, Glossary } from './glossary.js';

describe('Glossary', () => {
  it('explains a term once, the first time a text names it', () => {
    const glossary = new Glossary();
    // In the glossary's order, not the text's.
    expect(glossary.explainNew('KHO finalize, then the kexec handoff')).toEqual([
      '  ⓘ kexec: boots a new kernel from the running one, skipping the firmware; RAM survives',
      '  ⓘ KHO: Kexec HandOver, which keeps chosen memory and a description of it across a kexec',
    ]);
    expect(glossary.explainNew('KHO again, and kexec')).toEqual([]);
  });

  it('matches whole words only', () => {
    const glossary = new Glossary();
    expect(glossary.explainNew('memfd_create, ftruncate')).toEqual([]);
    expect(glossary.explainNew('PRESERVE_FD of the memfd')).toHaveLength(1);
  });

  it('has one line for each of the demo’s terms', () => {
    expect(GLOSSARY.map(([term]) => term).sort()).toEqual(
      ['FLB', 'HWPT', 'IOAS', 'KHO', 'LUO', 'agent', 'kexec', 'luod', 'memfd', 'vfio'].sort(),
    );
    for (const [term, meaning] of GLOSSARY) {
      expect(meaning.startsWith(`${term}: `)).toBe(true);
      expect(meaning).not.toContain('\n');
    }
  });
});
