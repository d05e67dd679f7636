// Errors meant for the person at the terminal: a message that says what was wrong, where, and
// what to do. The CLI prints these as one or two lines without a stack trace.
export class UsageError extends Error {
  override name = "UsageError";
}
