package api

import (
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"golang.org/x/time/rate"

	"github.com/nimbus-cloud/nimbus/api/cserr"
)

// limiterSet holds one token bucket per client: an API key, a session's
// user, or the remote address of unauthenticated calls (login).
type limiterSet struct {
	mu        sync.Mutex
	m         map[string]*rate.Limiter
	lastSweep time.Time
}

// sweepEvery and sweepAbove bound the set: idle buckets (full again) are
// dropped once it has grown.
const (
	sweepEvery = time.Minute
	sweepAbove = 10000
)

func (l *limiterSet) get(key string, r rate.Limit, burst int) *rate.Limiter {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string]*rate.Limiter{}
	}
	now := time.Now()
	if len(l.m) > sweepAbove && now.Sub(l.lastSweep) > sweepEvery {
		l.lastSweep = now
		for k, lim := range l.m {
			if lim.TokensAt(now) >= float64(lim.Burst()) {
				delete(l.m, k)
			}
		}
	}
	lim := l.m[key]
	if lim == nil {
		lim = rate.NewLimiter(r, burst)
		l.m[key] = lim
	}
	return lim
}

// rateLimit applies the per-client request limit (cfg.RateLimit requests
// per second, cfg.RateBurst at once; 0 turns it off). caller is nil for
// unauthenticated commands, which are limited per remote address (the TCP
// peer, not a forwarded-for header a client could forge).
func (s *Server) rateLimit(c *gin.Context, caller *Caller) error {
	if s.Cfg.RateLimit <= 0 || s.NoAuth {
		return nil
	}
	var key string
	switch {
	case caller == nil:
		key = "ip:" + c.RemoteIP()
	case caller.SessionKey == "" && caller.User.APIKey != nil:
		key = "key:" + *caller.User.APIKey
	default:
		key = "user:" + caller.User.UUID
	}
	burst := s.Cfg.RateBurst
	if burst <= 0 {
		burst = max(1, int(s.Cfg.RateLimit))
	}
	lim := s.keys.limits.get(key, rate.Limit(s.Cfg.RateLimit), burst)
	if lim.Allow() {
		return nil
	}
	wait := time.Duration(float64(time.Second) / s.Cfg.RateLimit)
	c.Header("Retry-After", strconv.Itoa(max(1, int((wait+time.Second-1)/time.Second))))
	return cserr.New(cserr.APILimitExceeded, "The number of API requests exceeded the limit of %g per second (burst %d); retry later", s.Cfg.RateLimit, burst)
}
