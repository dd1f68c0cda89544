// Package api holds the wire types and protocol constants shared by the
// daemon and the push client. It is not built yet.
package api
