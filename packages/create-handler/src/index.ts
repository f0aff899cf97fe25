/**
 * `npm create @liveupdate/handler <name>`: write a new Live Update Orchestrator file-handler
 * package that builds, tests and packs on its own. The bin is `create-handler`; the same work is
 * available as functions.
 *
 * @module @liveupdate/create-handler
 */
export {
  createHandlerProject,
  type CreateHandlerProjectOptions,
  type CreatedHandlerProject,
} from './create-handler-project.js';
export { HANDLER_NAME_MAX, checkHandlerName, type HandlerName } from './handler-name.js';
export { handlerPackageJson } from './handler-package-json.js';
export { STARTER_USAGE, runStarter, type StarterOutput } from './run-starter.js';
export { StarterError } from './starter-error.js';
export { type TarballDependencies, tarballDependencies } from './tarball-dependencies.js';
export {
  DEVELOPMENT_PACKAGES,
  RUNTIME_PACKAGES,
  templateVersions,
  type TemplateVersions,
} from './template-versions.js';
