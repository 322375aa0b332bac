// Package yamledit edits YAML text in place, from the positions of its
// yaml.v3 nodes, so that every byte an edit does not need to change stays as
// it was: comments, blank lines, quoting, indentation, line endings. It also
// cuts a stream into its documents (SplitStream), writes a JSON document
// back as JSON in its own style (DetectJSON, RenderJSON), and has the small
// node helpers such edits need (Child, Scalar, Set, Ensure, ExpandAliases,
// DecodeInto). Nothing in it knows what the documents hold: an edit it
// cannot make in place returns ErrCannotEdit, and the caller decides what
// to do instead.
package yamledit
