/**
 * The chat page served at GET /: a thin view over the SDK. Every piece of user data reaches the
 * DOM through textContent (never innerHTML). Bundled by scripts/build-web.mjs into dist/web.
 */
import { ShardchatClient, type Message } from '../engine/client/index.js';

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const PAGE = 50;

interface RoomView {
  msgs: Map<number, Message>;
  /** seqs after which a gap marker is shown (messages before may be missing). */
  gaps: Set<number>;
  /** Shown above the messages: the server started this room again (a new epoch). */
  notice: string;
  pending: Map<number, string>;
  noOlder: boolean;
}

let client: ShardchatClient | null = null;
let active = '';
let retryAt = 0;
let countdown: ReturnType<typeof setInterval> | null = null;
let readTimer: ReturnType<typeof setTimeout> | null = null;
let pendingId = 0;
const views = new Map<string, RoomView>();

function view(room: string): RoomView {
  let v = views.get(room);
  if (!v) { v = { msgs: new Map(), gaps: new Set(), notice: '', pending: new Map(), noOlder: false }; views.set(room, v); }
  return v;
}

function el(tag: string, cls: string, text: string): HTMLElement {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  e.textContent = text;
  return e;
}

function bodyText(body: unknown): string {
  if (typeof body === 'string') return body;
  if (body !== null && typeof body === 'object' && typeof (body as { text?: unknown }).text === 'string') return (body as { text: string }).text;
  return JSON.stringify(body);
}

function renderMessages(): void {
  const list = $('messages');
  const v = view(active);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  if (v.notice) list.append(el('li', 'notice', v.notice));
  const seqs = [...v.msgs.keys()].sort((a, b) => a - b);
  for (const seq of seqs) {
    const m = v.msgs.get(seq)!;
    const li = document.createElement('li');
    li.dataset.seq = String(seq);
    li.append(el('span', 'ts', new Date(m.ts).toLocaleTimeString()), el('span', 'from', m.from), el('span', 'text', bodyText(m.body)));
    list.append(li);
    if (v.gaps.has(seq)) list.append(el('li', 'gap', 'some messages here are no longer available'));
  }
  for (const text of v.pending.values()) {
    const li = el('li', 'pending', '');
    li.append(el('span', 'from', client?.user ?? ''), el('span', 'text', text), el('span', 'ts', ' (sending…)'));
    list.append(li);
  }
  ($('older') as HTMLButtonElement).disabled = v.noOlder || seqs.length === 0 || seqs[0] === 1;
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderRooms(): void {
  const ul = $('rooms');
  ul.replaceChildren();
  for (const room of client?.rooms() ?? []) {
    const li = el('li', room === active ? 'active' : '', '');
    li.dataset.room = room;
    const n = room === active ? 0 : client!.unread(room);
    li.append(el('span', 'name', room), el('span', 'badge', n > 0 ? String(n) : ''));
    li.addEventListener('click', () => switchTo(room));
    ul.append(li);
  }
}

function renderMembers(): void {
  const ul = $('members');
  ul.replaceChildren(...(client?.members(active) ?? []).sort().map((u) => el('li', '', u)));
}

function renderStatus(): void {
  const s = $('status');
  const state = client?.state ?? 'disconnected';
  s.className = `status ${state}`;
  // Who is here is only known while connected: show the last list faded meanwhile.
  $('members').classList.toggle('stale', state !== 'connected');
  if (state === 'disconnected' && retryAt > 0) {
    s.textContent = `reconnecting in ${Math.max(0, Math.ceil((retryAt - Date.now()) / 1000))} s`;
  } else s.textContent = state === 'connected' ? `connected as ${client?.user ?? ''}` : state;
}

/** Marks `room` read now (the user opened it) or soon (messages arriving while it is open). */
function markRead(room: string, soon: boolean): void {
  // Messages arriving in a hidden tab stay unread; opening a room is the user looking at it.
  if (!client || (soon && document.visibilityState === 'hidden')) return;
  const now = (): void => {
    if (client && client.roomState(room) === 'joined' && client.unread(room) > 0) client.read(room).catch(() => undefined);
  };
  if (!soon) { now(); return; }
  if (readTimer) return;
  readTimer = setTimeout(() => { readTimer = null; if (room === active) now(); }, 300);
}

async function loadLatest(room: string): Promise<void> {
  if (!client) return;
  const page = await client.history(room, { limit: PAGE });
  const v = view(room);
  for (const m of page.msgs) v.msgs.set(m.seq, m);
  v.noOlder = !page.truncated && page.msgs.length < PAGE;
  if (room === active) renderMessages();
}

async function loadOlder(): Promise<void> {
  if (!client) return;
  const v = view(active);
  const oldest = Math.min(...v.msgs.keys());
  if (!Number.isFinite(oldest)) return;
  const page = await client.history(active, { before: oldest, limit: PAGE });
  for (const m of page.msgs) v.msgs.set(m.seq, m);
  if (page.msgs.length === 0) v.noOlder = true;
  renderMessages();
}

function switchTo(room: string): void {
  active = room;
  $('room-title').textContent = room;
  renderRooms();
  renderMessages();
  renderMembers();
  markRead(room, false);
}

function joinRoom(room: string): void {
  if (!client) return;
  client.join(room).catch((e: Error) => { $('status').textContent = `cannot join ${room}: ${e.message}`; });
  switchTo(room);
}

function start(user: string, room: string): void {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  const c = new ShardchatClient({ url, user });
  client = c;
  c.on('state', (e) => {
    if (e.state === 'connected') retryAt = 0;
    renderStatus();
  });
  c.on('retry', (e) => { retryAt = e.at; renderStatus(); });
  c.on('room', (e) => {
    // A first join loads the latest page; a resume gets `missed` as messages; a gap reloads itself.
    if (e.state === 'joined' && e.cause.reason === 'join') loadLatest(e.room).catch(() => undefined);
    renderRooms();
  });
  c.on('gap', (e) => {
    const v = view(e.room);
    if (e.reason === 'epoch') {
      v.msgs.clear(); v.gaps.clear(); v.noOlder = false;
      v.notice = 'the server started this room again: earlier messages are gone';
    } else {
      const last = Math.max(0, ...v.msgs.keys());
      if (last > 0) v.gaps.add(last);
    }
    if (e.room === active) renderMessages();
  });
  c.on('message', (m) => {
    view(m.room).msgs.set(m.seq, m);
    if (m.room === active) { renderMessages(); markRead(m.room, true); } else renderRooms();
  });
  c.on('unread', () => renderRooms());
  c.on('members', (e) => { if (e.room === active) renderMembers(); });
  countdown = setInterval(renderStatus, 250);
  $('login').hidden = true;
  $('chat').hidden = false;
  joinRoom(room);
}

function send(text: string): void {
  if (!client || text.trim() === '') return;
  const v = view(active);
  const id = ++pendingId;
  v.pending.set(id, text);
  renderMessages();
  const room = active;
  client.publish(room, { text }).then(() => {
    v.pending.delete(id);
    if (room === active) renderMessages();
  }, (e: Error) => {
    v.pending.set(id, `${text} — not sent: ${e.message}`);
    if (room === active) renderMessages();
  });
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const user = ($('name') as HTMLInputElement).value.trim();
  const room = ($('room') as HTMLInputElement).value.trim();
  localStorage.setItem('shardchat.name', user);
  start(user, room);
});
$('add-room').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('new-room') as HTMLInputElement;
  if (input.value.trim() !== '') joinRoom(input.value.trim());
  input.value = '';
});
$('compose').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('text') as HTMLInputElement;
  send(input.value);
  input.value = '';
});
$('older').addEventListener('click', () => { loadOlder().catch(() => undefined); });
document.addEventListener('visibilitychange', () => { if (active) markRead(active, false); });
window.addEventListener('pagehide', () => { if (countdown) clearInterval(countdown); client?.close(); });
($('name') as HTMLInputElement).value = localStorage.getItem('shardchat.name') ?? '';
