package bmc

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// ParseURL reads a BMC URL as BareMetal hosts and fencing configurations
// give it: the scheme names the provider (ipmi://HOST[:PORT],
// redfish://HOST[:PORT] over HTTPS, redfish+http://HOST[:PORT],
// https://HOST[:PORT], sim://NAME for the simulator), and query parameters
// tune it: insecure=true accepts a self-signed certificate (Redfish; off by
// default), power_timeout=90s bounds the power read-back. Other
// parameters are returned in Details for the caller (a BareMetal host's
// mac, cpunumber...). Address is the URL without its query.
func ParseURL(raw string) (BMC, error) {
	raw = strings.TrimSpace(raw)
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return BMC{}, hypervisor.NewError(ErrInvalid, "bmc url %q has no scheme: want ipmi://HOST[:PORT] or redfish://HOST[:PORT]", raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return BMC{}, hypervisor.NewError(ErrInvalid, "bmc url %q: %v", raw, err)
	}
	var b BMC
	switch strings.ToLower(scheme) {
	case "ipmi", "ipmitool", "ipmi2", "lanplus":
		b.Provider = ProviderIPMI
	case "redfish", "https", "redfish+http", "http":
		b.Provider = ProviderRedfish
	case "sim", "simulator":
		b.Provider = ProviderSimulator
	default:
		return BMC{}, hypervisor.NewError(ErrInvalid, "bmc url %q: unknown scheme %q (want ipmi:// or redfish://)", raw, scheme)
	}
	if u.Host == "" {
		return BMC{}, hypervisor.NewError(ErrInvalid, "bmc url %q names no host", raw)
	}
	q := u.Query()
	b.Details = map[string]string{}
	for k, v := range q {
		if len(v) > 0 {
			b.Details[strings.ToLower(k)] = v[0]
		}
	}
	if v, ok := b.Details["insecure"]; ok {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return BMC{}, hypervisor.NewError(ErrInvalid, "bmc url %q: insecure=%q is not true or false", raw, v)
		}
		b.Insecure = on
		delete(b.Details, "insecure")
	}
	if b.Provider == ProviderSimulator {
		b.Address = raw // the simulator reads its machine's shape from the query
	} else {
		u.RawQuery, u.Fragment = "", ""
		b.Address = u.String()
	}
	return b, nil
}
