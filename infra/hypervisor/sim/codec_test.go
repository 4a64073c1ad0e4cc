package sim

import (
	"reflect"
	"testing"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

// fill sets every field reachable from v to a non-zero value, so a field
// added to VMSpec and forgotten by the codec fails the round trip.
func fill(t *testing.T, v reflect.Value, seed int) {
	t.Helper()
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+seed%26)) + "\n\x00é")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(int64(seed*1000 + 7))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(t, v.Field(i), seed+i+1)
		}
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			fill(t, s.Index(i), seed+i*31)
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for i := 0; i < 3; i++ {
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(t, k, seed+i)
			fill(t, e, seed+i+50)
			m.SetMapIndex(k, e)
		}
		v.Set(m)
	default:
		t.Fatalf("codec test cannot fill a %s: teach the codec and this test", v.Kind())
	}
}

func TestSpecCodecCoversEveryField(t *testing.T) {
	var spec hypervisor.VMSpec
	fill(t, reflect.ValueOf(&spec).Elem(), 1)
	got, err := decodeSpec(encodeSpec(&spec))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, spec) {
		t.Fatalf("round trip lost data:\n got %+v\nwant %+v", *got, spec)
	}
	head, err := decodeHead(encodeSpec(&spec))
	if err != nil || string(head.name) != spec.Name || string(head.uuid) != spec.UUID || head.mem != spec.MemoryBytes || head.vcpus != spec.VCPUs || head.mhz != spec.MHz {
		t.Fatalf("head %+v %v", head, err)
	}
	if string(specName(encodeSpec(&spec))) != spec.Name || specName(nil) != nil || specName([]byte{1, 9}) != nil {
		t.Fatal("specName")
	}
	empty := hypervisor.VMSpec{Name: "n", UUID: "u"}
	if got, err := decodeSpec(encodeSpec(&empty)); err != nil || !reflect.DeepEqual(*got, empty) {
		t.Fatalf("empty spec: %+v %v", got, err)
	}
}

func TestRecordCodec(t *testing.T) {
	spec := encodeSpec(&hypervisor.VMSpec{Name: "n", UUID: "u", VCPUs: 1, MemoryBytes: 1})
	tests := map[string]record{
		"host":  {T: recHost, Host: "h", URL: "sim://h", Scope: simkit.Scope{Zone: "z", Pod: "p", Cluster: "c", Host: "h"}},
		"host-": {T: recHostDel, Host: "h"},
		"vm":    {T: recVM, Host: "h", State: 1, Spec: spec},
		"vm-":   {T: recVMDel, Host: "h", UUID: "u"},
		"state": {T: recState, Host: "h", UUID: "u", State: 2},
		"move":  {T: recMove, Host: "h", To: "h2", UUID: "u", State: 1},
	}
	for name, r := range tests {
		t.Run(name, func(t *testing.T) {
			b := r.appendTo(nil)
			got, err := parseRecord(b)
			if err != nil || !reflect.DeepEqual(got, r) {
				t.Fatalf("got %+v %v, want %+v", got, err, r)
			}
			for i := 0; i < len(b); i++ { // every truncation is refused, none panics
				if _, err := parseRecord(b[:i]); err == nil {
					t.Fatalf("truncated to %d bytes parsed", i)
				}
			}
		})
	}
	if _, err := parseRecord([]byte{99, 0}); err == nil {
		t.Error("unknown record type parsed")
	}
}
