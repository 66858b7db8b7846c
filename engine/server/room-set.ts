/**
 * The rooms one connection joined, as the main thread routed them (Conn.rooms), and the topics it
 * is subscribed to (Conn.topics, ./slow-consumers.ts), kept small for
 * idle users (issue 15): null for none, the room's name itself for one (no object at all), a Set
 * from the second room on (an empty Set costs ~180 B of heap, most of an idle connection's). At
 * most maxRoomsPerConn entries; a Set once it has held two rooms, so lookups stay O(1).
 */
export type RoomSet = string | Set<string> | null;

export function roomsHas(s: RoomSet, room: string): boolean {
  return s === null ? false : typeof s === 'string' ? s === room : s.has(room);
}

export function roomsSize(s: RoomSet): number {
  return s === null ? 0 : typeof s === 'string' ? 1 : s.size;
}

/** The set with `room` added. */
export function roomsAdd(s: RoomSet, room: string): RoomSet {
  if (s === null) return room;
  if (typeof s === 'string') return s === room ? s : new Set([s, room]);
  s.add(room);
  return s;
}

/** The set without `room`. */
export function roomsDelete(s: RoomSet, room: string): RoomSet {
  if (s === null) return null;
  if (typeof s === 'string') return s === room ? null : s;
  s.delete(room);
  return s;
}

/** The rooms, for iteration (a one-room set gives a one-element array). */
export function roomsOf(s: RoomSet): Iterable<string> {
  return s === null ? [] : typeof s === 'string' ? [s] : s;
}
