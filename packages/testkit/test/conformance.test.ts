// The conformance suite, run as an author runs it, against the note fixture handler.
import { describeConformance } from '@liveupdate/testkit';
import { noteConformance } from './helpers.js';

describeConformance(noteConformance);
