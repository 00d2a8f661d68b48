// Package failpoint lets the fault suite make a node fail on purpose at
// chosen points: an fsync error, a crash before or after an entry is
// applied, a crash while a snapshot is written. It exists only in a
// binary built with the failpoints tag; in every other build Enabled is
// false and the hooks compile away.
//
// A failpoints build reads its failpoints from the file named by the
// TALLY_FAILPOINTS environment variable, one "name value" per line:
//
//	fsync-error error          the next state commit fails (the node stops)
//	crash-before-apply crash   the node kills itself before applying an entry
//	crash-after-apply crash    ... after committing an entry, before answering
//	crash-snapshot crash       ... while persisting a snapshot
//	crash-saga-before-credit crash   ... after a saga's hold, before asking for the credit
//	crash-saga-before-resolve crash  ... after the destination answered, before resolving
//	snapshot-threshold 256     Raft snapshot threshold and trailing logs (read at start)
//	snapshot-interval 2s       how often Raft checks for a snapshot (read at start)
//
// The file is read again at most every 50 ms, so the harness can arm and
// disarm a running node.
package failpoint
