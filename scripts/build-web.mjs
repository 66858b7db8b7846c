#!/usr/bin/env node
// Bundles the chat page (web/) into dist/web at `npm run build`: web/app.ts and the SDK it
// imports become one minified ES module, dist/web/assets/app.js; index.html and style.css are
// copied. Nothing is fetched at run time (no CDN). Prints the bundle's min+gzip size.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const out = 'dist/web';
mkdirSync(`${out}/assets`, { recursive: true });
await build({
  entryPoints: ['web/app.ts'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  platform: 'browser',
  outfile: `${out}/assets/app.js`,
  logLevel: 'warning',
});
// The SDK alone, as a browser module, to state its size (docs/CLIENT.md).
await build({
  entryPoints: ['engine/client/index.ts'],
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2022'],
  platform: 'browser',
  outfile: `${out}/assets/shardchat-client.js`,
  logLevel: 'warning',
});
copyFileSync('web/index.html', `${out}/index.html`);
copyFileSync('web/style.css', `${out}/assets/style.css`);
const size = (f) => { const b = readFileSync(f); return `${b.length} B min, ${gzipSync(b).length} B min+gzip`; };
if (!process.env.npm_config_loglevel?.match(/silent/)) {
  console.log(`web: page bundle ${size(`${out}/assets/app.js`)}; SDK ${size(`${out}/assets/shardchat-client.js`)}`);
}
