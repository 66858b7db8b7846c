/**
 * The chat page in a real browser (Debian's chromium driven by playwright-core) against the real
 * CLI server as a child process: two users chat in one room, presence shows both; the server is
 * restarted (SIGTERM, then started again on the same port) and both pages come back by themselves,
 * and a message sent after the restart arrives once, with no gap. Screenshots go to test-output/.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import WebSocket from 'ws';
import { ShardchatClient } from '../engine/client/index.js';
import { requireTool } from './helpers/tools.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const outDir = path.join(root, 'test-output');

interface Server { child: ChildProcess; port: number; exited: Promise<number | null>; output: () => string }

/** Starts `shardchat` (dist/engine/cli.js) and resolves once it logs that it listens. */
function startCli(t: TestContext, port: number, dataDir: string): Promise<Server> {
  // The CLI's default store (durable SQLite), as `npm start` runs it, in a data dir of the test's own.
  const child = spawn(process.execPath, [path.join(root, 'dist/engine/cli.js'), '--host', '127.0.0.1', '--port', String(port), '--shards', '1', '--data-dir', dataDir],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  t.after(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; } });
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the CLI did not listen within 15 s:\n${out}`)), 15_000);
    child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /"event":"listening"[^\n]*"port":(\d+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]), exited, output: () => out }); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`the CLI exited with ${code} before listening:\n${out}`)); });
  });
}

/** Chromium with a fresh profile (playwright passes it as --user-data-dir). */
async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

async function launch(t: TestContext, executablePath: string): Promise<BrowserContext> {
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'shardchat-chromium-'));
  const browser = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1000, height: 600 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  t.after(async () => { await browser.close(); rmSync(userDataDir, { recursive: true, force: true }); });
  return browser;
}

async function openAs(browser: BrowserContext, port: number, user: string, room: string): Promise<Page> {
  const page = await browser.newPage();
  page.on('pageerror', (e) => { throw e; });
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.fill('#name', user);
  await page.fill('#room', room);
  await page.click('#login button[type=submit]');
  await page.locator('#status.connected').waitFor({ timeout: 5000 });
  return page;
}

async function send(page: Page, text: string): Promise<void> {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

/** The seqs and texts of the messages the page shows, in order. */
async function shown(page: Page): Promise<{ seq: number; text: string }[]> {
  return page.$$eval('#messages li[data-seq]', (lis) => lis.map((li) => ({
    seq: Number(li.getAttribute('data-seq')), text: li.querySelector('.text')?.textContent ?? '',
  })));
}

test('two browser tabs chat, see each other, and come back by themselves after a server restart', async (t) => {
  const exe = requireTool(t, 'chromium', 'chromium', 'run the chat page in a real browser');
  if (!exe) return;
  mkdirSync(outDir, { recursive: true });
  // A port chosen up front, not 0: uSockets sets SO_REUSEADDR only on a listener given a port,
  // and without it the first server's TIME_WAIT sockets would block the restart for a minute.
  const dataDir = mkdtempSync(path.join(tmpdir(), 'shardchat-browser-'));
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  let server = await startCli(t, await freePort(), dataDir);
  const port = server.port;
  // 60 messages of history, published through the SDK in Node (it paces itself to the rate limit).
  const seeder = new ShardchatClient({ url: `ws://127.0.0.1:${port}/ws`, user: 'seeder', WebSocket });
  t.after(() => seeder.close());
  await seeder.join('lobby');
  await Promise.all(Array.from({ length: 60 }, (_, i) => seeder.publish('lobby', { text: `old ${i + 1}` })));
  seeder.close();

  const browser = await launch(t, exe);
  const alice = await openAs(browser, port, 'alice', 'lobby');
  // The latest page (50), then one click pages back to the first message.
  await alice.locator('#messages li .text', { hasText: 'old 60' }).waitFor({ timeout: 3000 });
  assert.equal((await shown(alice))[0]!.text, 'old 11');
  await alice.click('#older');
  await alice.locator('#messages li .text', { hasText: /^old 1$/ }).waitFor({ timeout: 3000 });
  assert.deepEqual((await shown(alice)).map((m) => m.seq), Array.from({ length: 60 }, (_, i) => i + 1));
  const bob = await openAs(browser, port, 'bob', 'lobby');

  await alice.locator('#members li', { hasText: 'bob' }).waitFor({ timeout: 3000 });
  assert.deepEqual(await alice.locator('#members li').allTextContents(), ['alice', 'bob']);
  await bob.locator('#members li', { hasText: 'alice' }).waitFor({ timeout: 3000 });
  assert.deepEqual(await bob.locator('#members li').allTextContents(), ['alice', 'bob']);

  const sentAt = Date.now();
  await send(alice, 'hello from alice');
  await bob.locator('#messages li .text', { hasText: 'hello from alice' }).waitFor({ timeout: 1000 });
  const latency = Date.now() - sentAt;
  assert.ok(latency < 1000, `bob saw it within a second (${latency} ms)`);
  // Text is text: markup in a message is shown literally, never parsed.
  await send(bob, '<b>not bold</b><img src=x onerror=alert(1)>');
  await alice.locator('#messages li .text', { hasText: '<b>not bold</b>' }).waitFor({ timeout: 1000 });
  assert.equal(await alice.locator('#messages b, #messages img').count(), 0, 'no element made from message text');
  await alice.locator('#messages li.pending').waitFor({ state: 'detached', timeout: 2000 });
  await alice.screenshot({ path: path.join(outDir, 'browser-chat.png') });

  // Unread badges: alice in two rooms, bob writes in the one she is not looking at.
  for (const p of [alice, bob]) {
    await p.fill('#new-room', 'side');
    await p.press('#new-room', 'Enter');
    await p.locator('#rooms li.active', { hasText: 'side' }).waitFor({ timeout: 3000 });
  }
  await alice.locator('#members li', { hasText: 'bob' }).waitFor({ timeout: 3000 });
  await alice.click('#rooms li[data-room="lobby"]');
  await send(bob, 'psst');
  await alice.locator('#rooms li[data-room="side"] .badge', { hasText: '1' }).waitFor({ timeout: 2000 });
  await alice.screenshot({ path: path.join(outDir, 'browser-unread.png') });
  await alice.click('#rooms li[data-room="side"]');
  await alice.locator('#messages li .text', { hasText: 'psst' }).waitFor({ timeout: 2000 });
  await alice.locator('#rooms li[data-room="side"] .badge:empty').waitFor({ state: 'attached', timeout: 2000 });
  for (const p of [alice, bob]) await p.click('#rooms li[data-room="lobby"]');
  // Opening the room marked it read: its badge stays empty once she looks elsewhere.
  await alice.locator('#rooms li[data-room="side"] .badge:empty').waitFor({ state: 'attached', timeout: 2000 });

  // Restart: SIGTERM drains and exits 0; the same port serves again.
  const termAt = Date.now();
  server.child.kill('SIGTERM');
  assert.equal(await server.exited, 0, 'the CLI drains and exits 0 on SIGTERM');
  await alice.locator('#status.disconnected').waitFor({ timeout: 5000 });
  assert.match(await alice.locator('#status').textContent() ?? '', /reconnecting in \d+ s/);
  await alice.screenshot({ path: path.join(outDir, 'browser-reconnecting.png') });
  assert.equal(await alice.locator('#rooms li[data-room="side"] .badge').textContent(), '', 'side stays read');
  const stoppedAt = Date.now();
  const drainMs = /"event":"drain_finished","ms":(\d+)/.exec(server.output())?.[1] ?? '?';
  server = await startCli(t, port, dataDir);
  const upAt = Date.now();
  // 1001 -> a random 0-5 s plus the back-off's 0.5-1 s; attempts while the server is still down
  // fail and wait longer (1.5 s, then 2.5 s at most): 30 s leaves room for a loaded machine.
  for (const [who, p] of [['alice', alice], ['bob', bob]] as const) {
    await p.locator('#status.connected').waitFor({ timeout: 30_000 }).catch(async (e: Error) => {
      throw new Error(`${who} did not reconnect: status "${await p.locator('#status').textContent()}"; ${e.message}`);
    });
  }
  t.diagnostic(`drain ${drainMs} ms, SIGTERM to exit ${stoppedAt - termAt} ms, down ${upAt - stoppedAt} ms; both pages back ${Date.now() - termAt} ms after SIGTERM`);
  await alice.locator('#members li', { hasText: 'bob' }).waitFor({ timeout: 3000 });

  await send(bob, 'after the restart');
  await alice.locator('#messages li .text', { hasText: 'after the restart' }).waitFor({ timeout: 2000 });
  // The durable store kept the room (same epoch): the page still shows the history it had, and the
  // message sent after the restart continues the sequence with no hole and no duplicate.
  const a = await shown(alice);
  const b = await shown(bob);
  for (const [who, list] of [['alice', a], ['bob', b]] as const) {
    assert.equal(list.filter((m) => m.text === 'after the restart').length, 1, `${who} shows it once`);
    const first = list[0]?.seq ?? 1;
    assert.deepEqual(list.map((m) => m.seq), list.map((_, i) => first + i), `${who}: seqs without gap or duplicate`);
    assert.ok(list.length > 1 && list.some((m) => m.text !== 'after the restart'), `${who}: the history from before the restart is still shown`);
    assert.equal(await (who === 'alice' ? alice : bob).locator('#messages li.gap').count(), 0, `${who}: no gap marker`);
  }
  await alice.screenshot({ path: path.join(outDir, 'browser-after-restart.png') });
});
