// Package journal is the push daemon's durable record of sessions, objects,
// uploads and publish intents, kept in one bbolt file.
//
// The journal is the source of truth: a write method that returned nil has
// been committed and fsynced. High-rate object writes (MarkVerified,
// MarkReceived, MarkRejected, AddUpload, SetUploadState) go through
// bbolt's Batch so that concurrent writers share one fsync; a pack's
// batch of verified objects commits in transactions of its own (see
// soloVerified).
//
// Layout (all buckets at the top level):
//
//	meta        "version" → schema version
//	sessions    session ID → JSON Session
//	resume      sha256(owner, repo, force, sorted refs) → ID of the live session
//	live        session ID → "" for every live (open or publishing) session
//	owners      owner + "/" + session ID → "" for every live session
//	objects     session ID → bucket: object key → record
//	holders     owner + "/" + session ID → "" for every session with an object bucket
//	uploads     upload ID ("<session>/<32hex>") → JSON Upload
//	liveupload  "<session>/<object>" → ID of the open or received upload
//	intents     session ID → JSON Intent
//	revoked     owner → JSON Revocation
//	due         time, kind, session ID → "" for the work due on ended sessions
//	deferred    name of work left for after a publish's answer → ""
//	heads       ref → JSON list of its recent heads, oldest first
//	retiring    static delta name → when it stopped being wanted
//
// An object's key is its 32-byte checksum followed by its type (one byte,
// object.Type); its record is its state (one byte), then for Verified its
// size (uvarint), for Rejected the reason: about 50 bytes a record with
// bbolt's own 16.
//
// An object's Verified state is final within a session: the session then
// holds the object's file in the owner's spool until its release begins
// (ReleaseSessionEach takes it out of the holders index; DeleteSessionObjects
// then drops its records). The holders of a file are the owner's sessions
// in the holders index whose bucket has it Verified; the index bounds that
// look-up by the owner's sessions that still hold files. Need copies
// Verified records from those sessions, live or ended; MarkVerified and
// Need refuse sessions that left the live states, and ReleaseSessionEach
// refuses live ones, so a session whose release began never holds a file
// again.
package journal
