package api

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/api/cserr"
	"github.com/nimbus-cloud/nimbus/infra/config"
)

func TestValidateParamTypes(t *testing.T) {
	cases := []struct {
		p    Param
		good []string
		bad  []string
	}{
		{Param{Name: "s", Type: TString}, []string{"x", strings.Repeat("a", 255), "' OR 1=1 --", "é"}, []string{strings.Repeat("a", 256)}},
		{Param{Name: "s", Type: TString, Length: 10}, []string{"0123456789"}, []string{"01234567890"}},
		{Param{Name: "id", Type: TUUID}, []string{"5e1a5d2c-0000-4000-8000-000000000001"},
			[]string{"1", "5e1a5d2c00004000800000000000000001", "{5e1a5d2c-0000-4000-8000-000000000001}", "urn:uuid:5e1a5d2c-0000-4000-8000-000000000001", "5e1a5d2c-0000-4000-8000-00000000000z"}},
		{Param{Name: "n", Type: TInteger}, []string{"0", "-5", "2147483647"}, []string{"1.5", "x", "2147483648", "1e3", " 1"}},
		{Param{Name: "n", Type: TShort}, []string{"12"}, []string{"y"}},
		{Param{Name: "n", Type: TLong}, []string{"9223372036854775807", "-1"}, []string{"9223372036854775808", "0x10"}},
		{Param{Name: "b", Type: TBoolean}, []string{"true", "false", "TRUE", "False"}, []string{"1", "yes", "t"}},
		{Param{Name: "d", Type: TDate}, []string{"2026-01-02", "2026-01-02 03:04:05", "2026-01-02T03:04:05+0000", "2026-01-02T03:04:05Z"}, []string{"02/01/2026", "2026-13-01", "yesterday"}},
		{Param{Name: "ids", Type: TList, Of: TUUID}, []string{"5e1a5d2c-0000-4000-8000-000000000001,5e1a5d2c-0000-4000-8000-000000000002", "5e1a5d2c-0000-4000-8000-000000000001, "},
			[]string{"5e1a5d2c-0000-4000-8000-000000000001,x"}},
		{Param{Name: "ns", Type: TList, Of: TInteger}, []string{"1,2,3"}, []string{"1,b"}},
	}
	for _, tc := range cases {
		cmd := &Command{Name: "testCmd", Params: []Param{tc.p}}
		for _, v := range tc.good {
			if err := validate(cmd, url.Values{tc.p.Name: {v}}); err != nil {
				t.Errorf("%s %q refused: %v", tc.p.Type, v, err)
			}
		}
		for _, v := range tc.bad {
			err := validate(cmd, url.Values{tc.p.Name: {v}})
			if cserr.Code(err) != cserr.ParamError || !strings.Contains(err.Error(), tc.p.Name) {
				t.Errorf("%s %q: err = %v, want a 431 naming %s", tc.p.Type, v, err, tc.p.Name)
			}
		}
	}
}

func TestValidateRequired(t *testing.T) {
	cmd := &Command{Name: "createThing", Params: []Param{
		{Name: "name", Type: TString, Required: true},
		{Name: "details", Type: TMap, Required: true},
		{Name: "opt", Type: TInteger},
	}}
	err := validate(cmd, url.Values{"details[0].key": {"v"}})
	if cserr.Code(err) != 431 || !strings.Contains(err.Error(), "missing parameter name") {
		t.Fatalf("missing name: %v", err)
	}
	err = validate(cmd, url.Values{"name": {"x"}})
	if cserr.Code(err) != 431 || !strings.Contains(err.Error(), "missing parameter details") {
		t.Fatalf("missing map: %v", err)
	}
	if err := validate(cmd, url.Values{"name": {"x"}, "details[0].key": {"v"}}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	// An empty value counts as missing, an empty optional one as absent.
	if err := validate(cmd, url.Values{"name": {""}, "details[0].k": {"v"}}); cserr.Code(err) != 431 {
		t.Fatalf("empty required: %v", err)
	}
	if err := validate(cmd, url.Values{"name": {"x"}, "details[0].k": {"v"}, "opt": {""}}); err != nil {
		t.Fatalf("empty optional: %v", err)
	}
}

func TestListMarshal(t *testing.T) {
	for _, tc := range []struct {
		l    List
		want string
	}{
		{List{Key: "zone", Count: 0, Items: []int{}}, `{}`},
		{List{Key: "zone", Count: 0, Items: nil}, `{}`},
		{List{Key: "role", Count: 2, Items: []map[string]any{{"id": "a"}, {"id": "b"}}}, `{"count":2,"role":[{"id":"a"},{"id":"b"}]}`},
		// count is the total, the items one page.
		{List{Key: "role", Count: 7, Items: []string{"x"}}, `{"count":7,"role":["x"]}`},
	} {
		b, err := json.Marshal(map[string]any{"listrolesresponse": tc.l})
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"listrolesresponse":` + tc.want + `}`; string(b) != want {
			t.Errorf("got %s, want %s", b, want)
		}
	}
}

func TestPageCapped(t *testing.T) {
	s := &Server{Cfg: config.Config{MaxPageSize: 100}}
	for _, tc := range []struct {
		page, size    string
		limit, offset int
	}{
		{"", "", 100, 0},
		{"1", "10", 10, 0},
		{"3", "10", 10, 20},
		{"1", "100000", 100, 0},
		{"2", "-1", 100, 100},
		{"0", "0", 100, 0},
		{"-4", "5", 5, 0},
	} {
		c := &Call{S: s, params: url.Values{"page": {tc.page}, "pagesize": {tc.size}}}
		l, o := c.Page()
		if l != tc.limit || o != tc.offset {
			t.Errorf("page=%s pagesize=%s: (%d, %d), want (%d, %d)", tc.page, tc.size, l, o, tc.limit, tc.offset)
		}
	}
}

// TestPageCappedOverHTTP: a huge pagesize is answered, capped, not refused.
func TestPageCappedOverHTTP(t *testing.T) {
	ts := newTestServer(t, func(c *config.Config) { c.MaxPageSize = 2 })
	r := ts.admin(cmdParams("listRoles", "pagesize", "1000000"))
	if r.Status != 200 {
		t.Fatalf("listRoles: %s", r)
	}
	var out struct {
		Count int              `json:"count"`
		Role  []map[string]any `json:"role"`
	}
	_ = json.Unmarshal(r.Body["listrolesresponse"], &out)
	if out.Count != 4 || len(out.Role) != 2 {
		t.Fatalf("count %d with %d items, want the total 4 and a page of 2: %s", out.Count, len(out.Role), r.Raw)
	}
}
