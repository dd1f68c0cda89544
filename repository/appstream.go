package repository

import (
	"slices"

	"github.com/ostree-upload/ostree-upload/api"
	"github.com/ostree-upload/ostree-upload/journal"
)

// The appstream branches of a Flatpak repository (appstream/ARCH and
// appstream2/ARCH, the catalogue software centres read) are derived from
// its apps' refs. Regenerating them commits two branches and fsyncs every
// objects/ directory: most of the cost of `flatpak build-update-repo`. A
// publish therefore updates the summary (refs, xa.cache, summary.idx and
// signatures) before it answers, and leaves the appstream branches to the
// deferred worker (deferred.go), which runs after the answer a full run of
// the summary's group commit. Publishes that arrive while it works share
// its next run.

// touchesApps reports whether a publish moving refs changes what the
// appstream branches are made from: an app or runtime ref.
func touchesApps(refs []journal.RefUpdate) bool {
	return slices.ContainsFunc(refs, func(r journal.RefUpdate) bool { return api.FlatpakRef(r.Ref) })
}

// appstreamDeferred reports whether a publish of sess leaves the appstream
// update for after its answer.
func (s *Service) appstreamDeferred(sess journal.Session) bool {
	return s.cfg.Update && len(s.cfg.UpdateHook) == 0 && touchesApps(sess.Refs)
}
