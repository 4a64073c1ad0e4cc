package simkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// kv is a tiny state machine over the journal: "set k v" and "del k".
type kv struct {
	mu sync.Mutex
	m  map[string]string
	j  *Journal
}

func openKV(t *testing.T, dir string, opts JournalOptions) *kv {
	t.Helper()
	s := &kv{m: map[string]string{}}
	j, err := OpenJournal(dir, opts, func(rec []byte) error {
		f := strings.Fields(string(rec))
		switch {
		case len(f) == 3 && f[0] == "set":
			s.m[f[1]] = f[2]
		case len(f) == 2 && f[0] == "del":
			delete(s.m, f[1])
		default:
			return fmt.Errorf("bad record %q", rec)
		}
		return nil
	}, func(emit func([]byte) error) error {
		s.mu.Lock()
		defer s.mu.Unlock()
		for k, v := range s.m {
			if err := emit([]byte("set " + k + " " + v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.j = j
	return s
}

func (s *kv) set(t *testing.T, k, v string) {
	t.Helper()
	s.mu.Lock()
	seq, err := s.j.Write([]byte("set " + k + " " + v))
	if err == nil {
		s.m[k] = v
	}
	s.mu.Unlock()
	if err == nil {
		err = s.j.Commit(seq, true)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (s *kv) del(t *testing.T, k string) {
	t.Helper()
	s.mu.Lock()
	_, err := s.j.Write([]byte("del " + k))
	delete(s.m, k)
	s.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *kv) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, v := range s.m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestJournalRecovery(t *testing.T) {
	tests := map[string]struct {
		opts  JournalOptions
		after func(t *testing.T, dir string) // damage as a crash at some point would
	}{
		"plain":       {},
		"sync always": {opts: JournalOptions{Sync: SyncAlways}},
		"sync never":  {opts: JournalOptions{Sync: SyncNever, SyncInterval: -1}},
		"compaction left its old journal": {after: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, journalName(1)), []byte("set stale 1\nnonsense\n"), 0o644)
		}},
		"compaction left a temporary snapshot": {after: func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, snapshotName+".tmp"), []byte("garbage"), 0o644)
		}},
		"torn last line": {after: func(t *testing.T, dir string) {
			logs, _ := filepath.Glob(filepath.Join(dir, "journal-*.log"))
			f, _ := os.OpenFile(logs[len(logs)-1], os.O_WRONLY|os.O_APPEND, 0)
			f.WriteString("set torn")
			f.Close()
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			s := openKV(t, dir, tc.opts)
			for i := 0; i < 100; i++ {
				s.set(t, fmt.Sprintf("k%d", i%30), fmt.Sprint(i))
				if i%7 == 0 {
					s.del(t, fmt.Sprintf("k%d", i%30))
				}
				if i == 50 {
					if err := s.j.Compact(); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := s.String()
			s.j.Abandon()
			if tc.after != nil {
				tc.after(t, dir)
			}
			s2 := openKV(t, dir, tc.opts)
			defer s2.j.Close()
			if got := s2.String(); got != want {
				t.Fatalf("recovered %s\nwant      %s", got, want)
			}
		})
	}
}

func TestJournalConcurrentCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openKV(t, dir, JournalOptions{CompactBytes: 512})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				s.set(t, fmt.Sprintf("g%d-%d", g, i%40), fmt.Sprint(i))
			}
		}()
	}
	wg.Wait()
	want := s.String()
	if err := s.j.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openKV(t, dir, JournalOptions{})
	defer s2.j.Close()
	if s2.String() != want {
		t.Fatal("state differs after concurrent writes and compactions")
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "journal-*.log"))
	if len(logs) > 2 {
		t.Errorf("compaction left %d journals", len(logs))
	}
}

func TestJournalDamage(t *testing.T) {
	frames := func(recs ...string) []byte {
		var b []byte
		for _, r := range recs {
			b = appendFrame(b, []byte(r))
		}
		return b
	}
	good := frames("set a 1", "set b 2", "set c 3")
	second := frameHeader + len("set a 1") // offset of the second frame
	flip := func(b []byte, at int) []byte { b = append([]byte(nil), b...); b[at] ^= 0xff; return b }
	tests := map[string]struct {
		file []byte
		want string // recovered state; "" = open fails
	}{
		"intact":                     {file: good, want: "a=1,b=2,c=3"},
		"partial header at the end":  {file: good[:len(good)-len("set c 3")-3], want: "a=1,b=2"},
		"partial payload at the end": {file: good[:len(good)-2], want: "a=1,b=2"},
		"bad checksum of the last":   {file: flip(good, len(good)-1), want: "a=1,b=2"},
		"zero-filled tail":           {file: append(append([]byte(nil), good...), make([]byte, 4096)...), want: "a=1,b=2,c=3"},
		"bad checksum in the middle": {file: flip(good, second+frameHeader+1)},
		"garbage in the middle":      {file: append(append(frames("set a 1"), "garbage!"...), frames("set b 2")...)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, journalName(1)), tc.file, 0o644)
			if tc.want == "" {
				_, err := OpenJournal(dir, JournalOptions{}, func([]byte) error { return nil }, nil)
				if err == nil || !strings.Contains(err.Error(), "offset") {
					t.Fatalf("damaged journal opened: %v", err)
				}
				return
			}
			s := openKV(t, dir, JournalOptions{})
			if got := s.String(); got != tc.want {
				t.Fatalf("recovered %s, want %s", got, tc.want)
			}
			s.set(t, "d", "4") // appends after the cut
			s.j.Close()
			s = openKV(t, dir, JournalOptions{})
			defer s.j.Close()
			if got := s.String(); got != tc.want+",d=4" {
				t.Fatalf("after append: %s", got)
			}
		})
	}
}

func TestFaultRules(t *testing.T) {
	ctx := context.Background()
	at := Scope{Zone: "z", Pod: "p", Cluster: "c", Host: "h"}
	tests := map[string]struct {
		rule  Rule
		calls int
		fails int
		bad   bool
	}{
		"count":           {rule: Rule{Count: 2}, calls: 5, fails: 2},
		"always":          {rule: Rule{Count: -1}, calls: 5, fails: 5},
		"probability 0.5": {rule: Rule{Probability: 0.5}, calls: 2000, fails: -1},
		"other scope":     {rule: Rule{Count: -1, Scope: Scope{Host: "other"}}, calls: 3},
		"other op":        {rule: Rule{Count: -1, Op: "StopVM"}, calls: 3},
		"star op":         {rule: Rule{Count: 1, Op: "*"}, calls: 3, fails: 1},
		"latency only":    {rule: Rule{Latency: 1}, calls: 3},
		"bad mode":        {rule: Rule{Mode: "explode"}, bad: true},
		"bad probability": {rule: Rule{Probability: 2}, bad: true},
		"bad latency":     {rule: Rule{Latency: -1}, bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f, err := NewFaults("")
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Add(tc.rule)
			if tc.bad {
				if !errors.Is(err, hypervisor.ErrInvalid) {
					t.Fatalf("Add = %v", err)
				}
				return
			}
			fails := 0
			for i := 0; i < tc.calls; i++ {
				if f.Check(ctx, "Sim", "StartVM", "x", at) != nil {
					fails++
				}
			}
			if tc.fails >= 0 && fails != tc.fails {
				t.Errorf("%d failures, want %d", fails, tc.fails)
			}
			if tc.fails < 0 && (fails < 800 || fails > 1200) {
				t.Errorf("%d failures of %d at p=0.5", fails, tc.calls)
			}
		})
	}
}

func TestFaultsPersist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "faults.json")
	f, _ := NewFaults(path)
	f.Add(Rule{Op: "StartVM", Count: 3})
	down, _ := f.HostDown("h1", false)
	f.Add(Rule{Scope: Scope{Host: "h1"}, Latency: 5})
	if f.Check(context.Background(), "Sim", "StartVM", "", Scope{Host: "h2"}) == nil {
		t.Fatal("no failure")
	}
	g, err := NewFaults(path)
	if err != nil {
		t.Fatal(err)
	}
	rules := g.Rules()
	if len(rules) != 3 || rules[0].Count != 2 || rules[1].ID != down {
		t.Fatalf("reloaded %+v", rules)
	}
	id, _ := g.Add(Rule{})
	if id <= rules[2].ID {
		t.Errorf("id %d reused", id)
	}
	if err := g.HostUp("h1"); err != nil {
		t.Fatal(err)
	}
	if r := g.Rules(); len(r) != 3 || r[1].Latency != 5 {
		t.Errorf("HostUp removed the wrong rules: %+v", r)
	}
	g.Clear(Scope{}, true)
	if h, _ := NewFaults(path); len(h.Rules()) != 0 || h.Active() {
		t.Error("Clear did not persist")
	}
}
