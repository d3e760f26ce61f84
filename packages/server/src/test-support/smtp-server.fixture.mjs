// A real SMTP receiver (smtp-server) for tests: STARTTLS with the certificate given, plain
// authentication accepted only over TLS for the user and password given. It prints one JSON line
// when listening ({"port"}) and one per message received ({"envelope", "raw"}); the test reads them.
// With a sixth argument `strip-starttls` it plays a man in the middle who removed STARTTLS from the
// server's offer: no STARTTLS, any client's mail taken in clear, no authentication asked.
// Usage: node smtp-server.fixture.mjs <port> <keyFile> <certFile> <user> <password> [strip-starttls]
import { readFileSync } from 'node:fs';
import { SMTPServer } from 'smtp-server';

const [port, keyFile, certFile, user, password, mode] = process.argv.slice(2);
const stripped = mode === 'strip-starttls';
const server = new SMTPServer({
  secure: false,
  key: readFileSync(keyFile),
  cert: readFileSync(certFile),
  authMethods: ['PLAIN', 'LOGIN'],
  authOptional: stripped,
  hideSTARTTLS: stripped,
  // Refused too when asked for anyway (a client that insists, as nodemailer's requireTLS does).
  disabledCommands: stripped ? ['STARTTLS'] : [],
  // Never in clear: a client that skipped STARTTLS cannot even try (the stripper takes any password).
  allowInsecureAuth: stripped,
  logger: false,
  onAuth(auth, session, callback) {
    if (stripped) return callback(null, { user: auth.username });
    if (auth.username === user && auth.password === password && session.secure)
      return callback(null, { user });
    return callback(new Error('Invalid username or password'));
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on('data', (chunk) => chunks.push(chunk));
    stream.on('end', () => {
      const envelope = {
        from: session.envelope.mailFrom ? session.envelope.mailFrom.address : null,
        to: session.envelope.rcptTo.map((r) => r.address),
        secure: session.secure,
        user: session.user ?? null,
      };
      process.stdout.write(`${JSON.stringify({ envelope, raw: Buffer.concat(chunks).toString('utf8') })}\n`);
      callback();
    });
  },
});
server.on('error', (error) => process.stderr.write(`${error.message}\n`));
server.listen(Number(port), '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ port: server.server.address().port })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
