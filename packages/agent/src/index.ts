export { AgentClient, type AgentEntry, type AgentFetchOptions } from './agent-client.js';
export {
  AGENT_SESSION,
  MANIFEST_MAX_BYTES,
  MANIFEST_TOKEN,
  MANIFEST_VERSION,
  decodeManifest,
  encodeManifest,
  type Manifest,
  type ManifestEntry,
} from './agent-manifest.js';
export {
  AGENT_FRAME_HEADER,
  AGENT_MAX_FDS,
  AGENT_MAX_MESSAGE,
  MessageReader,
  encodeFrame,
  sendMessage,
  type ReceivedMessage,
  type WireMessage,
} from './agent-wire.js';
export { DEFAULT_AGENT_PATH, LuoAgent, type LuoAgentOptions } from './luo-agent.js';
export { MANIFEST_SEALS } from './read-manifest.js';
