package storage

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Checksum is an expected digest of a template, in CloudStack's form:
// "{SHA-256}<hex>" (any of MD5, SHA-1, SHA-256, SHA-512), or bare hex.
// CloudStack reads bare hex as MD5; Nimbus reads it by its length (32 MD5,
// 40 SHA-1, 64 SHA-256, 128 SHA-512), which accepts every CloudStack value.
type Checksum struct {
	Algorithm string // MD5, SHA-1, SHA-256, SHA-512; "" = no checksum
	Hex       string // lower case
}

type algorithm struct {
	name    string
	hexLen  int
	newHash func() hash.Hash
}

var algorithms = []algorithm{
	{"MD5", 32, md5.New},
	{"SHA-1", 40, sha1.New},
	{"SHA-256", 64, sha256.New},
	{"SHA-512", 128, sha512.New},
}

func lookupAlgorithm(name string) (algorithm, bool) {
	n := strings.ReplaceAll(strings.ToUpper(strings.TrimSpace(name)), "-", "")
	for _, a := range algorithms {
		if strings.ReplaceAll(a.name, "-", "") == n {
			return a, true
		}
	}
	return algorithm{}, false
}

// ParseChecksum reads a checksum; "" is the zero Checksum (none given).
func ParseChecksum(s string) (Checksum, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Checksum{}, nil
	}
	bad := func(why string) (Checksum, error) {
		return Checksum{}, hypervisor.NewError(ErrInvalid, "checksum %q: %s", s, why)
	}
	digest := s
	var algo algorithm
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return bad("no closing brace")
		}
		a, ok := lookupAlgorithm(s[1:end])
		if !ok {
			return bad("unknown algorithm " + s[1:end] + " (want MD5, SHA-1, SHA-256 or SHA-512)")
		}
		algo, digest = a, strings.TrimSpace(s[end+1:])
	}
	digest = strings.ToLower(digest)
	if _, err := hex.DecodeString(digest); err != nil || digest == "" {
		return bad("not hexadecimal")
	}
	if algo.name == "" {
		for _, a := range algorithms {
			if a.hexLen == len(digest) {
				algo = a
			}
		}
		if algo.name == "" {
			return bad("length fits no algorithm (32 MD5, 40 SHA-1, 64 SHA-256, 128 SHA-512)")
		}
	}
	if len(digest) != algo.hexLen {
		return bad("a " + algo.name + " digest has " + strconv.Itoa(algo.hexLen) + " hex digits")
	}
	return Checksum{Algorithm: algo.name, Hex: digest}, nil
}

// IsZero tells whether no checksum was given.
func (c Checksum) IsZero() bool { return c.Algorithm == "" }

// New returns a hash for the algorithm (SHA-256 when none was given, so
// that a computed digest can always be recorded).
func (c Checksum) New() hash.Hash {
	if a, ok := lookupAlgorithm(c.Algorithm); ok {
		return a.newHash()
	}
	return sha256.New()
}

// String is the CloudStack form, "{SHA-256}<hex>".
func (c Checksum) String() string {
	if c.IsZero() {
		return ""
	}
	return "{" + c.Algorithm + "}" + c.Hex
}

// Of returns the checksum of the same algorithm (SHA-256 when none) for a
// computed digest.
func (c Checksum) Of(sum []byte) Checksum {
	algo := c.Algorithm
	if algo == "" {
		algo = "SHA-256"
	}
	return Checksum{Algorithm: algo, Hex: hex.EncodeToString(sum)}
}

// Matches tells whether a computed digest is the expected one; a zero
// Checksum matches anything.
func (c Checksum) Matches(sum []byte) bool {
	return c.IsZero() || c.Hex == hex.EncodeToString(sum)
}
