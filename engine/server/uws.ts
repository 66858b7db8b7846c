/**
 * The only module that loads uWebSockets.js. A user's own `uWebSockets.js` install wins; else
 * the npm republication this package depends on. Some republications quietly fall back to a
 * pure-JavaScript imitation when their native binary does not load on this platform: that is
 * refused here, with a message that says what to do, because the engine's performance and its
 * back-pressure semantics depend on the native server.
 */
import { createRequire } from 'node:module';
import { EngineError } from '../errors.js';
import type * as UWS from '@trufflesuite/uws-js-unofficial';

export type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, WebSocketBehavior, us_listen_socket } from '@trufflesuite/uws-js-unofficial';
export type UwsModule = typeof UWS;

/** Candidates in order of preference. */
export const UWS_CANDIDATES = ['uWebSockets.js', '@trufflesuite/uws-js-unofficial', 'uwebsockets'] as const;

const require = createRequire(import.meta.url);
let loaded: { mod: UwsModule; from: string } | null = null;

function isNative(mod: unknown): mod is UwsModule {
  if (mod === null || typeof mod !== 'object') return false;
  const app = (mod as { App?: unknown }).App;
  return typeof app === 'function' && Function.prototype.toString.call(app).includes('[native code]');
}

/** Loads the native uWebSockets.js or throws EngineError('SHARDCHAT_UWS_UNAVAILABLE'). */
export function loadUws(): { mod: UwsModule; from: string } {
  if (loaded) return loaded;
  const tried: string[] = [];
  for (const name of UWS_CANDIDATES) {
    let mod: unknown;
    try {
      mod = require(name);
    } catch (e) {
      const code = (e as { code?: string }).code;
      tried.push(`${name}: ${code === 'MODULE_NOT_FOUND' ? 'not installed' : (e as Error).message}`);
      continue;
    }
    if (isNative(mod)) {
      loaded = { mod, from: name };
      return loaded;
    }
    tried.push(`${name}: only a pure-JavaScript fallback loaded (no native binary for Node ABI ${process.versions.modules} on ${process.platform}-${process.arch})`);
  }
  throw new EngineError('SHARDCHAT_UWS_UNAVAILABLE',
    'shardchat needs the native uWebSockets.js and refuses to run on a JavaScript fallback.\n' +
    tried.map((t) => `  - ${t}`).join('\n') +
    '\nInstall a uWebSockets.js build for this Node.js version (for example `npm install uWebSockets.js`' +
    ' from its authors\' release, or `npm install @trufflesuite/uws-js-unofficial` on Node 20 glibc Linux).');
}

/** Exposed for tests: whether a module object is the native uWS. */
export const isNativeUws = isNative;
