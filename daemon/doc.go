// Package daemon is the receive daemon: HTTP API, authentication, resumable
// uploads, verification, publishing, expiry and metrics. It is not built yet.
package daemon
