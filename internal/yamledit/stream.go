package yamledit

import (
	"bytes"
	"regexp"
)

// Document is one YAML document of a stream. Writing Sep and Body back in
// order reproduces the stream byte for byte.
type Document struct {
	// Sep is its separator line (empty for a first document without one).
	Sep []byte
	// Body is the text after it.
	Body []byte
	// Offset is where Body starts in the stream, Line the 1-based line it
	// starts on.
	Offset, Line int
}

// separator is a document start marker: "---" at the start of a line,
// followed by the end of the line or a space or tab (then a comment, or
// content such as "--- |"). The YAML spec makes such a line a marker
// wherever it appears, so splitting on it is exact.
var separator = regexp.MustCompile(`(?m)^---(?:[ \t].*)?(?:\r?\n|$)`)

// SplitStream cuts a stream into documents. The separator line is kept with
// the document it starts; content after "--- " on the same line would be
// lost to the body, so such a document is kept whole as its separator
// (SepContent reports it) and never edited.
func SplitStream(in []byte) []Document {
	var docs []Document
	locs := separator.FindAllIndex(in, -1)
	start, sep := 0, []byte(nil)
	for _, loc := range locs {
		docs = append(docs, Document{Sep: sep, Body: in[start:loc[0]], Offset: start})
		sep, start = in[loc[0]:loc[1]], loc[1]
	}
	docs = append(docs, Document{Sep: sep, Body: in[start:], Offset: start})
	// A first document with no body before the first "---" is not a document.
	if len(docs) > 1 && len(docs[0].Sep) == 0 && len(docs[0].Body) == 0 {
		docs = docs[1:]
	}
	// Directives (%YAML, %TAG) belong to the document whose "---" follows
	// them: such a piece is one document with the next.
	for i := 0; i+1 < len(docs); i++ {
		if directivesOnly(docs[i].Body) {
			next := docs[i+1]
			docs[i].Body = in[docs[i].Offset : next.Offset+len(next.Body)]
			docs = append(docs[:i+1], docs[i+2:]...)
		}
	}
	line := 1
	prev := 0
	for i := range docs {
		line += bytes.Count(in[prev:docs[i].Offset], []byte("\n"))
		prev = docs[i].Offset
		docs[i].Line = line
	}
	return docs
}

// directivesOnly reports whether body holds directives and nothing but
// comments and blank lines besides.
func directivesOnly(body []byte) bool {
	found := false
	for _, l := range bytes.Split(body, []byte("\n")) {
		switch l = bytes.TrimSpace(l); {
		case len(l) == 0 || l[0] == '#':
		case l[0] == '%':
			found = true
		default:
			return false
		}
	}
	return found
}

// SepContent reports whether a separator line carries document content
// ("--- |", "--- {a: b}"), rather than nothing or a comment.
func SepContent(sep []byte) bool {
	rest := bytes.TrimSpace(bytes.TrimPrefix(sep, []byte("---")))
	return len(rest) > 0 && rest[0] != '#'
}

// LineEnding is the line ending a body uses: "\r\n" when its first line
// ends so, else "\n".
func LineEnding(body []byte) string {
	if i := bytes.IndexByte(body, '\n'); i > 0 && body[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}
