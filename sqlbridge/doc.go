// Package sqlbridge mirrors Ballast's revision log into a PostgreSQL (or
// YugabyteDB) table laid out as kine's, and moves data between kine tables
// and Ballast.
//
// The mirror (Mirror) runs on the Raft leader. It follows the local store's
// revision log as an in-process watcher, so a slow or absent database never
// holds up a write, and copies each revision as kine would have written it:
// one row per changed key. The last mirrored revision is kept in a state row
// updated in the same transaction as the rows it covers, and a PostgreSQL
// advisory lock held on the writing connection keeps other members out, so
// restarts on either side resume with no gap and no duplicate.
//
// kine numbers every change; Ballast numbers requests, and one request may
// change several keys (a txn, a range delete, a lease revoke). While every
// revision changes one key, row id equals revision. A revision that changes
// k > 1 keys takes k consecutive ids and is recorded in
// ballast_sqlbridge_blocks, from which the ballast_history view gives every
// row its revision. See docs/sql.md.
package sqlbridge
