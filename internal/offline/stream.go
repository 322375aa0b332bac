package offline

import (
	"bytes"
	"regexp"
)

// document is one YAML document of a stream: its separator line (empty for
// a first document without one), the body after it, and where the body
// starts in the stream. Writing sep and body back in order reproduces the
// stream byte for byte.
type document struct {
	sep  []byte
	body []byte
	// offset of body in the stream, and the 1-based line it starts on.
	offset, line int
}

// separator is a document start marker: "---" at the start of a line,
// followed by the end of the line or a space or tab (then a comment, or
// content such as "--- |"). The YAML spec makes such a line a marker
// wherever it appears, so splitting on it is exact.
var separator = regexp.MustCompile(`(?m)^---(?:[ \t].*)?(?:\r?\n|$)`)

// splitStream cuts a stream into documents. The separator line is kept with
// the document it starts; content after "--- " on the same line would be
// lost to the body, so such a document is kept whole as its separator
// (sepContent reports it) and never edited.
func splitStream(in []byte) []document {
	var docs []document
	locs := separator.FindAllIndex(in, -1)
	start, sep := 0, []byte(nil)
	for _, loc := range locs {
		docs = append(docs, document{sep: sep, body: in[start:loc[0]], offset: start})
		sep, start = in[loc[0]:loc[1]], loc[1]
	}
	docs = append(docs, document{sep: sep, body: in[start:], offset: start})
	// A first document with no body before the first "---" is not a document.
	if len(docs) > 1 && len(docs[0].sep) == 0 && len(docs[0].body) == 0 {
		docs = docs[1:]
	}
	line := 1
	prev := 0
	for i := range docs {
		line += bytes.Count(in[prev:docs[i].offset], []byte("\n"))
		prev = docs[i].offset
		docs[i].line = line
	}
	return docs
}

// sepContent reports whether a separator line carries document content
// ("--- |", "--- {a: b}"), rather than nothing or a comment.
func sepContent(sep []byte) bool {
	rest := bytes.TrimSpace(bytes.TrimPrefix(sep, []byte("---")))
	return len(rest) > 0 && rest[0] != '#'
}

// lineEnding is the line ending a body uses: "\r\n" when its first line
// ends so, else "\n".
func lineEnding(body []byte) string {
	if i := bytes.IndexByte(body, '\n'); i > 0 && body[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}
