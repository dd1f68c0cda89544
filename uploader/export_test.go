package uploader

// WithPipeline sets the names per negotiation and the batches waiting for
// it, for tests of the pipeline's bounds.
func WithPipeline(o Options, batch, window int) Options {
	o.batch, o.window = batch, window
	return o
}

// WithEveryFileInDoubt makes the filter of file names take every file for
// one met before: every file goes by the doubt's negotiation.
func WithEveryFileInDoubt(o Options) Options {
	o.doubtAll = true
	return o
}

// PeakNames is the most names a push held at once between its walk and
// the end of their work.
func PeakNames(r *Result) int64 { return r.peakNames }
