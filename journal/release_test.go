package journal

import "context"

// ReleaseSession is ReleaseSessionEach collecting the names to free, as
// the tests read them.
func (j *Journal) ReleaseSession(ctx context.Context, sessionID, owner string) ([]string, error) {
	var freed []string
	err := j.ReleaseSessionEach(ctx, sessionID, owner, func(names []string) error {
		freed = append(freed, names...)
		return nil
	})
	return freed, err
}
