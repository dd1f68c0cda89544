// Package journal is the daemon's durable record of push sessions, objects,
// uploads and publish intents. It is not built yet.
package journal
