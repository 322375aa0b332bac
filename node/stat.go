package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Stat is one /proc/net/stat file: a header of column names, then one row
// of hex numbers per CPU.
type Stat struct {
	// Entries is the table's current size. The kernel prints the same
	// global value on every row: it counts all network namespaces together.
	Entries uint64
	// Counters are the other columns, summed over CPUs.
	Counters map[string]uint64
}

// ParseStat reads a /proc/net/stat file (arp_cache, ndisc_cache,
// nf_conntrack). Columns are found by name, so kernels that add columns
// parse the same.
func ParseStat(r io.Reader) (Stat, error) {
	sc := bufio.NewScanner(r)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return Stat{}, err
		}
		return Stat{}, errors.New("empty file")
	}
	header := strings.Fields(sc.Text())
	if len(header) == 0 || header[0] != "entries" {
		return Stat{}, fmt.Errorf("unexpected header %q (want it to start with entries)", sc.Text())
	}
	s := Stat{Counters: make(map[string]uint64, len(header)-1)}
	rows := 0
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(fields) != len(header) {
			return Stat{}, fmt.Errorf("row %d has %d columns, header has %d", rows+1, len(fields), len(header))
		}
		for i, f := range fields {
			v, err := strconv.ParseUint(f, 16, 64)
			if err != nil {
				return Stat{}, fmt.Errorf("row %d, column %s: %q is not hex", rows+1, header[i], f)
			}
			if i == 0 {
				s.Entries = v
				continue
			}
			s.Counters[header[i]] += v
		}
		rows++
	}
	if err := sc.Err(); err != nil {
		return Stat{}, err
	}
	if rows == 0 {
		return Stat{}, errors.New("no rows after the header")
	}
	return s, nil
}
