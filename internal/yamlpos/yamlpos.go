// Package yamlpos finds where a YAML syntax error is: the line and column
// of the mistake, for documents that gopkg.in/yaml.v3 refused.
package yamlpos

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"

	goccy "github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/lexer"
	goccyparser "github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// SyntaxError finds where a YAML syntax error is, for a document that
// gopkg.in/yaml.v3 refused. yaml.v3 reports only a line, and for parser
// errors the line of its context mark counted from zero (so, the line
// before the mistake) with no column. goccy/go-yaml's parser reports the
// offending token; for a flow collection that is never closed, that token
// is the first one after it, so the position of the unclosed '{' or '['
// is reported instead, as a user reads it. ok is false when goccy finds no
// error (the two parsers disagree); the caller then keeps yaml.v3's line.
// Lines count from firstLine: 1 for a file, the document's first line for
// one document of a stream.
func SyntaxError(data []byte, firstLine int) (line, col int, msg string, ok bool) {
	data = lf(data)
	_, err := goccyparser.ParseBytes(data, 0)
	var yerr goccy.Error
	if err == nil || !errors.As(err, &yerr) || yerr.GetToken() == nil {
		return 0, 0, "", false
	}
	tok, msg := yerr.GetToken(), yerr.GetMessage()
	line, col = tok.Position.Line+firstLine-1, tok.Position.Column
	if strings.Contains(msg, "must be specified") && (strings.Contains(msg, "'}'") || strings.Contains(msg, "']'")) {
		if open := unclosedFlow(string(data), tok.Position.Offset); open != nil {
			return open.Position.Line + firstLine - 1, open.Position.Column, fmt.Sprintf("%q opened here is not closed (%s, at %d:%d)", open.Value, msg, line, col), true
		}
	}
	if tok.Value == "}" || tok.Value == "]" {
		msg = fmt.Sprintf("%q closes nothing that is open here (%s)", tok.Value, msg)
	}
	return line, col, msg, true
}

// lf is data with CRLF line ends made LF: goccy counts a blank CRLF line
// twice, so every position after one was a line late. Lines and columns
// are the same either way.
func lf(data []byte) []byte {
	return bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
}

// unclosedFlow returns the innermost '{' or '[' still open before offset.
func unclosedFlow(src string, offset int) *token.Token {
	var stack []*token.Token
	for _, t := range lexer.Tokenize(src) {
		if t.Position.Offset >= offset {
			break
		}
		switch t.Type {
		case token.MappingStartType, token.SequenceStartType:
			stack = append(stack, t)
		case token.MappingEndType, token.SequenceEndType:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		}
	}
	if len(stack) == 0 {
		return nil
	}
	return stack[len(stack)-1]
}

// unknownAnchor is yaml.v3's error for an alias whose anchor is not defined.
var unknownAnchor = regexp.MustCompile(`unknown anchor '([^']+)' referenced`)

// UnknownAlias finds, for yaml.v3's "unknown anchor 'x' referenced" (which
// it reports with no position), the first alias *x in data: its line
// (counted from firstLine) and column. ok is false for other errors, or
// when no such alias is found.
func UnknownAlias(data []byte, firstLine int, err error) (line, col int, ok bool) {
	m := unknownAnchor.FindStringSubmatch(err.Error())
	if m == nil {
		return 0, 0, false
	}
	toks := lexer.Tokenize(string(lf(data)))
	for i, t := range toks {
		if t.Type == token.AliasType && i+1 < len(toks) && toks[i+1].Value == m[1] {
			return t.Position.Line + firstLine - 1, t.Position.Column, true
		}
	}
	return 0, 0, false
}
