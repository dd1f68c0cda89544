// Package failpoint marks the points in the publish path where tests kill
// the daemon. Release builds compile them to nothing; a build with the tag
// "failpoints" dies with SIGKILL at the point named by the environment
// variable OSTREE_UPLOAD_FAILPOINT, exactly as an operator's kill -9 would.
package failpoint
