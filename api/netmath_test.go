package api

import (
	"strings"
	"testing"

	"github.com/nimbus-cloud/nimbus/activities"
)

func TestNetmathParseIPv4(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		bad  bool
	}{
		{"0.0.0.0", 0, false},
		{"10.0.0.1", 0x0a000001, false},
		{"192.168.1.254", 0xc0a801fe, false},
		{"255.255.255.255", 0xffffffff, false},
		{" 10.1.2.3 ", 0x0a010203, false},
		{"", 0, true},
		{"10.0.0", 0, true},
		{"10.0.0.256", 0, true},
		{"::1", 0, true},
		{"::ffff:10.0.0.1", 0, true},
		{"010.0.0.1", 0, true},
		{"ten.0.0.1", 0, true},
	} {
		got, err := parseIPv4(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseIPv4(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseIPv4(%q) = %#x, %v; want %#x", tc.in, got, err, tc.want)
		}
		if s := ipv4String(got); s != strings.TrimSpace(tc.in) {
			t.Errorf("ipv4String(%#x) = %q, want %q", got, s, tc.in)
		}
	}
}

func TestNetmathNetmask(t *testing.T) {
	for _, tc := range []struct {
		in   string
		bits int
		bad  bool
	}{
		{"0.0.0.0", 0, false},
		{"255.0.0.0", 8, false},
		{"255.255.0.0", 16, false},
		{"255.255.255.0", 24, false},
		{"255.255.255.128", 25, false},
		{"255.255.255.252", 30, false},
		{"255.255.255.254", 31, false},
		{"255.255.255.255", 32, false},
		{"255.0.255.0", 0, true},
		{"0.255.255.255", 0, true},
		{"255.255.255.1", 0, true},
		{"24", 0, true},
	} {
		got, err := parseNetmask(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("parseNetmask(%q) = %d, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.bits {
			t.Errorf("parseNetmask(%q) = %d, %v; want %d", tc.in, got, err, tc.bits)
		}
		if s := netmaskString(got); s != tc.in {
			t.Errorf("netmaskString(%d) = %q, want %q", got, s, tc.in)
		}
	}
}

func TestNetmathSubnet(t *testing.T) {
	ip := func(s string) uint32 {
		v, err := parseIPv4(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		gw         string
		bits       int
		cidr       string
		first, end string // usable hosts
		in, out    string
	}{
		{"10.0.0.1", 24, "10.0.0.0/24", "10.0.0.1", "10.0.0.254", "10.0.0.77", "10.0.1.1"},
		{"192.168.10.129", 25, "192.168.10.128/25", "192.168.10.129", "192.168.10.254", "192.168.10.200", "192.168.10.127"},
		{"172.16.5.9", 16, "172.16.0.0/16", "172.16.0.1", "172.16.255.254", "172.16.200.3", "172.17.0.1"},
		{"10.9.9.8", 31, "10.9.9.8/31", "10.9.9.8", "10.9.9.9", "10.9.9.9", "10.9.9.10"},
		{"10.9.9.8", 32, "10.9.9.8/32", "10.9.9.8", "10.9.9.8", "10.9.9.8", "10.9.9.9"},
	} {
		s := subnetOf(ip(tc.gw), tc.bits)
		if s.CIDR() != tc.cidr {
			t.Errorf("subnetOf(%s/%d) = %s, want %s", tc.gw, tc.bits, s.CIDR(), tc.cidr)
		}
		if h := s.Hosts(); h.Start != ip(tc.first) || h.End != ip(tc.end) {
			t.Errorf("%s hosts = %s, want %s-%s", tc.cidr, h, tc.first, tc.end)
		}
		if !s.Contains(ip(tc.in)) || s.Contains(ip(tc.out)) {
			t.Errorf("%s: contains %s should be true and %s false", tc.cidr, tc.in, tc.out)
		}
	}
	a, b, c := subnetOf(ip("10.0.0.0"), 16), subnetOf(ip("10.0.200.0"), 24), subnetOf(ip("10.1.0.0"), 24)
	if !a.Overlaps(b) || !b.Overlaps(a) || a.Overlaps(c) || b.Overlaps(c) {
		t.Error("subnet overlaps wrong")
	}
}

func TestNetmathRanges(t *testing.T) {
	r := func(s, e string) ipRange {
		v, err := parseIPRange(s, e)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		a, b    ipRange
		overlap bool
	}{
		{r("10.0.0.1", "10.0.0.10"), r("10.0.0.10", "10.0.0.20"), true}, // touching at one address
		{r("10.0.0.1", "10.0.0.10"), r("10.0.0.11", "10.0.0.20"), false},
		{r("10.0.0.1", "10.0.0.100"), r("10.0.0.5", "10.0.0.6"), true}, // inside
		{r("10.0.0.5", "10.0.0.6"), r("10.0.0.1", "10.0.0.100"), true},
		{r("10.0.0.1", ""), r("10.0.0.1", "10.0.0.1"), true},
		{r("0.0.0.0", "255.255.255.255"), r("8.8.8.8", ""), true},
		{r("10.0.0.1", "10.0.0.9"), r("9.255.255.255", "10.0.0.0"), false},
	} {
		if got := tc.a.Overlaps(tc.b); got != tc.overlap {
			t.Errorf("%s overlaps %s = %v, want %v", tc.a, tc.b, got, tc.overlap)
		}
	}
	if _, err := parseIPRange("10.0.0.9", "10.0.0.1"); err == nil || !strings.Contains(err.Error(), "after") {
		t.Errorf("reversed range: %v", err)
	}
	for _, tc := range []struct {
		r    ipRange
		size uint64
	}{
		{r("10.0.0.1", ""), 1},
		{r("10.0.0.0", "10.0.0.255"), 256},
		{r("10.0.0.0", "10.0.255.255"), 65536},
		{r("0.0.0.0", "255.255.255.255"), 1 << 32},
	} {
		if tc.r.Size() != tc.size {
			t.Errorf("%s size = %d, want %d", tc.r, tc.r.Size(), tc.size)
		}
	}
	// Iteration covers every address once, in order, and survives the top
	// of the address space.
	var got []string
	r("255.255.255.253", "255.255.255.255").Each(func(ip uint32) bool { got = append(got, ipv4String(ip)); return true })
	if strings.Join(got, ",") != "255.255.255.253,255.255.255.254,255.255.255.255" {
		t.Errorf("Each at the top = %v", got)
	}
	n := 0
	r("10.0.0.0", "10.0.0.255").Each(func(uint32) bool { n++; return n < 5 })
	if n != 5 {
		t.Errorf("Each stop: %d calls", n)
	}
	if !r("10.0.0.5", "10.0.0.6").Within(r("10.0.0.1", "10.0.0.6")) || r("10.0.0.5", "10.0.0.7").Within(r("10.0.0.1", "10.0.0.6")) {
		t.Error("Within wrong")
	}
}

func TestNetmathAddressPlan(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		gateway, mask, start, end string
		err                       string // substring; "" means valid
		size                      uint64
	}{
		{"pod range", "192.168.1.1", "255.255.255.0", "192.168.1.10", "192.168.1.50", "", 41},
		{"single address", "192.168.1.1", "255.255.255.0", "192.168.1.10", "", "", 1},
		{"whole /16", "10.20.0.1", "255.255.0.0", "10.20.0.2", "10.20.255.254", "", 65533},
		{"outside the subnet", "192.168.1.1", "255.255.255.0", "192.168.2.10", "192.168.2.20", "not inside the subnet", 0},
		{"crosses the subnet end", "192.168.1.1", "255.255.255.0", "192.168.1.200", "192.168.2.5", "not inside the subnet", 0},
		{"broadcast address", "192.168.1.1", "255.255.255.0", "192.168.1.200", "192.168.1.255", "not inside the subnet", 0},
		{"network address", "192.168.1.1", "255.255.255.0", "192.168.1.0", "192.168.1.9", "not inside the subnet", 0},
		{"gateway inside", "192.168.1.1", "255.255.255.0", "192.168.1.1", "192.168.1.9", "contains the gateway", 0},
		{"gateway in the middle", "192.168.1.100", "255.255.255.0", "192.168.1.10", "192.168.1.200", "contains the gateway", 0},
		{"reversed", "192.168.1.1", "255.255.255.0", "192.168.1.50", "192.168.1.10", "after", 0},
		{"bad gateway", "192.168.1", "255.255.255.0", "192.168.1.10", "192.168.1.20", "gateway", 0},
		{"gateway is the network", "192.168.1.0", "255.255.255.0", "192.168.1.10", "192.168.1.20", "network or broadcast", 0},
		{"bad netmask", "192.168.1.1", "255.0.255.0", "192.168.1.10", "192.168.1.20", "netmask", 0},
		{"zero netmask", "192.168.1.1", "0.0.0.0", "192.168.1.10", "192.168.1.20", "netmask", 0},
		{"bad start", "192.168.1.1", "255.255.255.0", "x", "192.168.1.20", "startip", 0},
		{"too large", "10.0.0.1", "255.254.0.0", "10.0.0.2", "10.1.255.254", "at most 65536", 0},
	} {
		p, err := checkAddressPlan(tc.gateway, tc.mask, tc.start, tc.end)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.err)
		case tc.err == "" && p.Range.Size() != tc.size:
			t.Errorf("%s: size %d, want %d", tc.name, p.Range.Size(), tc.size)
		}
	}
}

func TestNetmathVnetRanges(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string // formatted; "" means an error
		n    int
	}{
		{"100-200,300-400", 4094, "100-200,300-400", 202},
		{"300-400, 100-200", 4094, "100-200,300-400", 202},
		{"5", 4094, "5", 1},
		{"1-4094", 4094, "1-4094", 4094},
		{"100-200,201-300", 4094, "100-200,201-300", 201},
		{"5000-5100", activities.MaxOverlayID, "5000-5100", 101},
		{"0-10", 4094, "", 0},
		{"4000-4095", 4094, "", 0},
		{"200-100", 4094, "", 0},
		{"100-200,150-250", 4094, "", 0},
		{"100-200,200", 4094, "", 0},
		{"a-b", 4094, "", 0},
		{"", 4094, "", 0},
		{"100-", 4094, "", 0},
	} {
		spans, err := activities.ParseVnetRanges(tc.in, tc.max)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseVnetRanges(%q) = %v, want an error", tc.in, spans)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseVnetRanges(%q): %v", tc.in, err)
			continue
		}
		if got := activities.FormatVnetRanges(spans); got != tc.want || activities.VnetCount(spans) != tc.n {
			t.Errorf("ParseVnetRanges(%q) = %s (%d ids), want %s (%d)", tc.in, got, activities.VnetCount(spans), tc.want, tc.n)
		}
	}
}
