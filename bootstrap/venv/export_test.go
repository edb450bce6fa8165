package venv

// BatchLogLine is the line the batch log holds for a finished batch of
// the destinations dsts, in order, copied of them copies.
func BatchLogLine(dsts []string, copied int) string {
	batch := make([]*op, len(dsts))
	for i, d := range dsts {
		batch[i] = &op{dst: d}
	}
	l := &batchLog{}
	return l.line(batch, copied)
}
