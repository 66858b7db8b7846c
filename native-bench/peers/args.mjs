/** The command line every peer server takes: --port P (1..65535) [--host H]. Exits 2 on a bad port. */
export function peerArgs(name, defaultPort) {
  const arg = (flag, def) => {
    const i = process.argv.indexOf(flag);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
  };
  const port = Number(arg('--port', String(defaultPort)));
  const host = arg('--host', '127.0.0.1');
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    process.stderr.write(`${name}: --port must be 1..65535 (port 0 is not supported)\n`);
    process.exit(2);
  }
  return { port, host };
}
