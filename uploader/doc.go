// Package uploader is the push client: negotiation, parallel resumable
// uploads, retries, progress and commit. It is not built yet.
package uploader
