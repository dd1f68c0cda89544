// Package journal is the push daemon's durable record of sessions, objects,
// uploads and publish intents, kept in one bbolt file.
//
// The journal is the source of truth: a write method that returned nil has
// been committed and fsynced. High-rate object writes (MarkVerified,
// MarkReceived, MarkRejected, AddUpload, SetUploadState) go through
// bbolt's Batch so that concurrent writers share one fsync.
//
// Layout (all buckets at the top level):
//
//	meta        "version" → schema version
//	sessions    session ID → JSON Session
//	resume      sha256(owner, repo, force, sorted refs) → ID of the live session
//	live        session ID → "" for every live (open or publishing) session
//	objects     session ID → bucket: object name → state, size, reason
//	spool       owner → bucket: object name → JSON {size, holders}
//	uploads     upload ID ("<session>/<32hex>") → JSON Upload
//	liveupload  "<session>/<object>" → ID of the open or received upload
//	intents     session ID → JSON Intent
//	deferred    name of work left for after a publish's answer → ""
//	heads       ref → JSON list of its recent heads, oldest first
//	retiring    static delta name → when it stopped being wanted
//
// An object's Verified state is final within a session: the session is then
// one of the holders of the owner's spool index entry for that object until
// ReleaseSession. Need and MarkVerified refuse sessions that are no longer
// live, so a session that left the live states and was released never
// becomes a holder again.
package journal
