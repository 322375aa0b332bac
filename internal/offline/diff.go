package offline

import (
	"bytes"
	"fmt"

	udiff "github.com/aymanbagabas/go-udiff"
)

// Diff returns a unified diff (3 lines of context) from the input to Data.
// Each changed document is diffed on its own with a linear-space Myers
// diff (golang.org/x/tools' algorithm, as go-udiff exports it) and its
// hunks are moved to the document's lines in the stream: the cost follows
// the size of the changed documents, not the stream's. Hunks never span two
// documents, as context is taken from the document only.
func (o *Output) Diff(fromName, toName string) (string, error) {
	all := udiff.UnifiedDiff{From: fromName, To: toName}
	fromLine, toDelta, pos := 1, 0, 0
	for _, c := range o.changed {
		fromLine += bytes.Count(o.in[pos:c.offset], []byte("\n"))
		pos = c.offset
		u, err := udiff.ToUnifiedDiff(fromName, toName, string(c.old), udiff.Lines(string(c.old), string(c.new)), 3)
		if err != nil {
			return "", fmt.Errorf("failed to diff: %w", err)
		}
		for _, h := range u.Hunks {
			h.FromLine += fromLine - 1
			h.ToLine += fromLine - 1 + toDelta
			all.Hunks = append(all.Hunks, h)
		}
		toDelta += bytes.Count(c.new, []byte("\n")) - bytes.Count(c.old, []byte("\n"))
	}
	return all.String(), nil
}
