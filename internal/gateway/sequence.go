package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/wisp-faas/wisp/internal/errdefs"
	"github.com/wisp-faas/wisp/internal/function"
	"github.com/wisp-faas/wisp/internal/sandbox"
	"github.com/wisp-faas/wisp/internal/scheduler"
	"github.com/wisp-faas/wisp/internal/store"
)

// maxSequenceDepth bounds sequences nested in sequences; a cycle through
// several sequences (a calls b calls a) ends here with a clear error.
const maxSequenceDepth = 8

// run performs one call of t: a function's in a sandbox, a sequence's step
// by step. For a sequence it returns its steps' activation ids too.
func (g *Gateway) run(ctx context.Context, t *scheduler.Target, req *sandbox.Request, depth int) (*scheduler.Result, []string, error) {
	if t.Spec.IsSequence() {
		return g.runSequence(ctx, t, req, depth)
	}
	res, err := g.sched.Invoke(ctx, t, req)
	return res, nil, err
}

// runSequence calls the steps of seq in order, each with the previous
// step's response body as its request body: the bytes are handed over,
// not copied or spooled, so a payload of several MB costs one buffer per
// step. Each step gets an activation of its own, whose Parent is the
// sequence's. A step that fails ends the chain with its error; seq's
// timeout (ctx) bounds the whole chain, each step's own timeout its step.
func (g *Gateway) runSequence(ctx context.Context, seq *scheduler.Target, req *sandbox.Request, depth int) (*scheduler.Result, []string, error) {
	if depth >= maxSequenceDepth {
		return nil, nil, errdefs.Invalidf("check the steps of the sequences involved for a cycle",
			"sequence %s is nested more than %d deep", seq.Name, maxSequenceDepth)
	}
	ns := seq.Namespace()
	total := &scheduler.Result{}
	children := make([]string, 0, len(seq.Spec.Steps))
	body, header := req.Body, req.Header
	for i, step := range seq.Spec.Steps {
		ref := function.Ref(ns, step)
		st := g.catalog.get(ref)
		if st == nil {
			return total, children, errdefs.New(errdefs.ErrNotFound,
				fmt.Sprintf("deploy %s, or change the sequence's steps", step),
				"sequence %s: step %d (%s) is not deployed", seq.Name, i+1, step)
		}
		if _, err := g.limits.allow(st); err != nil {
			return total, children, fmt.Errorf("sequence %s: step %d: %w", seq.Name, i+1, err)
		}
		// Each step is a call of the namespace's and takes a token of its
		// rate quota, the first step the token the sequence's own call took.
		// A later step waits for its token while the chain's timeout allows:
		// a sequence paces itself to the quota rather than fail half done.
		if i > 0 {
			if err := g.tenants.waitRate(ctx, function.NamespaceOf(ns)); err != nil {
				return total, children, fmt.Errorf("sequence %s: step %d: %w", seq.Name, i+1, err)
			}
		}
		id := store.NewActivationID()
		stepReq := &sandbox.Request{ActivationID: id, Method: req.Method, Path: "/", Header: header, Body: body}
		if i == 0 {
			stepReq.Path, stepReq.RawQuery = req.Path, req.RawQuery
		}
		arrived := time.Now()
		sctx, cancel := context.WithTimeout(ctx, st.Spec.Timeout.D())
		res, kids, err := g.run(sctx, st, stepReq, depth+1)
		cancel()
		if i == 0 && len(kids) == 0 && errors.Is(err, errdefs.ErrLimit) {
			// Refused for capacity before anything ran: the sequence's call
			// did not start (an async call waits and tries again).
			return total, nil, fmt.Errorf("sequence %s: step 1 (%s): %w", seq.Name, step, err)
		}
		children = append(children, id)
		if err != nil && ctx.Err() != nil && errors.Is(err, errdefs.ErrTimeout) {
			err = errdefs.WithHint(fmt.Errorf("sequence %s ran past its timeout of %s (in step %d, %s): %w",
				seq.Name, seq.Spec.Timeout, i+1, step, errdefs.ErrTimeout),
				"raise the sequence's timeout: it bounds the whole chain")
		}
		act, resp := g.activation(st, id, ref, arrived, res, err, links{parent: req.ActivationID, children: kids})
		act.RequestBytes = int64(len(body))
		g.record(act, arrived)
		if res != nil {
			total.Cold = total.Cold || res.Cold
			total.Timings.Queue += res.Timings.Queue
			total.Timings.Start += res.Timings.Start
			total.Timings.Exec += res.Timings.Exec
			total.Response = res.Response
		}
		switch {
		case err != nil:
			return total, children, fmt.Errorf("sequence %s: step %d (%s): %w", seq.Name, i+1, step, err)
		case resp.Error != "" || act.StatusCode >= 400:
			// The chain stops at a failed step; the sequence answers with
			// its status and says which step it was.
			msg := act.Error
			if msg == "" {
				msg = fmt.Sprintf("function %s answered HTTP %d", step, act.StatusCode)
			}
			total.Response = &sandbox.Response{Status: act.StatusCode, Error: fmt.Sprintf("in step %d (%s): %s", i+1, step, msg),
				Logs: resp.Logs}
			return total, children, nil
		}
		body = resp.Body
		header = http.Header{}
		if ct := resp.Header.Get("Content-Type"); ct != "" {
			header.Set("Content-Type", ct)
		}
	}
	return total, children, nil
}
