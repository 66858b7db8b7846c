/**
 * The command line every peer server takes: --port P (1..65535; 0 = any free port, for the peers
 * that print the port they got) [--host H]. Exits 2 on a bad port.
 */
export function peerArgs(name, defaultPort, allowZero = false) {
  const arg = (flag, def) => {
    const i = process.argv.indexOf(flag);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
  };
  const port = Number(arg('--port', String(defaultPort)));
  const host = arg('--host', '127.0.0.1');
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    process.stderr.write(`${name}: --port must be 1..65535 (port 0 is not supported)\n`);
    process.exit(2);
  }
  return { port, host };
}
