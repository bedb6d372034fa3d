package refmodel

import "math"

// Float32 arithmetic with a fixed operation order. Every product that is
// added to something is rounded explicitly (float32(a*b)): the Go spec lets
// a compiler fuse x*y+z into one FMA unless an explicit conversion rounds
// the product, and some architectures do. With the conversions, and with
// only +, -, *, / and a correctly rounded square root, results are the same
// bits on every platform. No transcendental function of package math is
// used: their implementations differ across architectures and CPU
// features.

// dot returns sum_i a[i]*b[i], summed in index order.
func dot(a, b []float32) float32 {
	var s float32
	for i := range a {
		s += float32(a[i] * b[i])
	}
	return s
}

// matVec returns w·x for a rows x len(x) row-major matrix w.
func matVec(w []float32, rows int, x []float32) []float32 {
	return matVecInto(make([]float32, rows), w, x)
}

// matVecInto sets out (rows values) to w·x: each row's sum in index order
// (dot's bits), four rows at a time so that four independent additions
// are in flight instead of one chain. It returns out.
func matVecInto(out, w, x []float32) []float32 {
	n := len(x)
	r := 0
	for ; r+4 <= len(out); r += 4 {
		b := r * n
		w0, w1, w2, w3 := w[b:b+n], w[b+n:b+2*n], w[b+2*n:b+3*n], w[b+3*n:b+4*n]
		var s0, s1, s2, s3 float32
		for i, xi := range x {
			s0 += float32(w0[i] * xi)
			s1 += float32(w1[i] * xi)
			s2 += float32(w2[i] * xi)
			s3 += float32(w3[i] * xi)
		}
		out[r], out[r+1], out[r+2], out[r+3] = s0, s1, s2, s3
	}
	for ; r < len(out); r++ {
		out[r] = dot(w[r*n:(r+1)*n], x)
	}
	return out
}

// addInto adds o to x element-wise.
func addInto(x, o []float32) {
	for i := range x {
		x[i] += o[i]
	}
}

// rmsNorm returns x / sqrt(mean(x^2) + 1e-6).
func rmsNorm(x []float32) []float32 {
	ms := dot(x, x)/float32(len(x)) + 1e-6
	r := float32(math.Sqrt(float64(ms))) // correctly rounded: deterministic
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v / r
	}
	return out
}

// l2Normalize scales x in place to unit length (almost: + 1e-6).
func l2Normalize(x []float32) {
	r := float32(math.Sqrt(float64(dot(x, x) + 1e-6)))
	for i := range x {
		x[i] /= r
	}
}

// softsign is x / (1 + |x|), the model's fixed nonlinearity, in (-1, 1).
func softsign(x float32) float32 {
	return x / (1 + float32(math.Abs(float64(x))))
}

// gate is a sigmoid-like squashing into (0, 1): 0.5 + 0.5*softsign(x).
func gate(x float32) float32 { return 0.5 + 0.5*softsign(x) }

// expNeg approximates exp(x) for x <= 0 as max(0, 1+x/256)^256 (eight
// squarings): monotone, in [0, 1], 1 at 0, exact bits everywhere.
func expNeg(x float32) float32 {
	if x >= 0 {
		return 1
	}
	y := 1 + x*(1.0/256)
	if y <= 0 {
		return 0
	}
	for i := 0; i < 8; i++ {
		y *= y
	}
	return y
}

// dotsFlat sets out[j] = dot(q, keys[j*kw:][:len(q)]) for every j < len(out):
// each sum in index order (so the same bits as dot), four keys at a time
// so that four independent additions are in flight instead of one chain.
func dotsFlat(q, keys []float32, kw int, out []float32) {
	n := len(q)
	j := 0
	for ; j+4 <= len(out); j += 4 {
		b := j * kw
		k0, k1, k2, k3 := keys[b:b+n], keys[b+kw:b+kw+n], keys[b+2*kw:b+2*kw+n], keys[b+3*kw:b+3*kw+n]
		var s0, s1, s2, s3 float32
		for i, qi := range q {
			s0 += float32(qi * k0[i])
			s1 += float32(qi * k1[i])
			s2 += float32(qi * k2[i])
			s3 += float32(qi * k3[i])
		}
		out[j], out[j+1], out[j+2], out[j+3] = s0, s1, s2, s3
	}
	for ; j < len(out); j++ {
		out[j] = dot(q, keys[j*kw:j*kw+n])
	}
}

// attendFlat sets out (dim values) to the softmax(scores)-weighted
// average of the values vals[j*vw:][:dim], with weights p_j =
// expNeg(score_j - m), m the largest score (maxOf): out[i] = (sum_j p_j·v_j[i]) / sum_j p_j,
// each sum accumulated in j order. ps is scratch of len(scores) values.
func attendFlat(scores []float32, m float32, vals []float32, vw, dim int, ps, out []float32) {
	sum := softmaxWeights(scores, m, ps)
	// Four output values at a time, each its own chain in j order: the
	// same additions as one value at a time.
	i := 0
	for ; i+4 <= dim; i += 4 {
		var a0, a1, a2, a3 float32
		for j, p := range ps {
			v := vals[j*vw+i : j*vw+i+4]
			a0 += float32(p * v[0])
			a1 += float32(p * v[1])
			a2 += float32(p * v[2])
			a3 += float32(p * v[3])
		}
		out[i], out[i+1], out[i+2], out[i+3] = a0, a1, a2, a3
	}
	for ; i < dim; i++ {
		var a float32
		for j, p := range ps {
			a += float32(p * vals[j*vw+i])
		}
		out[i] = a
	}
	for i := range out[:dim] {
		out[i] /= sum
	}
}

// argmax returns the index of the largest value, the lowest on ties.
func argmax(x []float32) uint32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return uint32(best)
}

// softmaxWeights sets ps[j] = expNeg(scores[j] - m) for m the largest
// score and returns their sum, accumulated in j order. Four weights at a
// time, each with expNeg's operations: s - m is never above 0 (NaN
// aside), where expNeg's first test only returns what the squarings give
// anyway (1 at 0), and y < 0 covers its y <= 0 (-0 squares to 0).
func softmaxWeights(scores []float32, m float32, ps []float32) float32 {
	var sum float32
	j := 0
	for ; j+4 <= len(scores); j += 4 {
		s := scores[j : j+4 : j+4]
		y0, y1, y2, y3 := 1+(s[0]-m)*(1.0/256), 1+(s[1]-m)*(1.0/256), 1+(s[2]-m)*(1.0/256), 1+(s[3]-m)*(1.0/256)
		if y0 < 0 {
			y0 = 0
		}
		if y1 < 0 {
			y1 = 0
		}
		if y2 < 0 {
			y2 = 0
		}
		if y3 < 0 {
			y3 = 0
		}
		for range 8 {
			y0, y1, y2, y3 = y0*y0, y1*y1, y2*y2, y3*y3
		}
		p := ps[j : j+4 : j+4]
		p[0], p[1], p[2], p[3] = y0, y1, y2, y3
		sum += y0
		sum += y1
		sum += y2
		sum += y3
	}
	for ; j < len(scores); j++ {
		p := expNeg(scores[j] - m)
		sum += p
		ps[j] = p
	}
	return sum
}

// scores4 sets out[j] = dot(q, keys[4j:][:4])·scale for 4-value queries
// and keys at stride 4 (the miniature's attention heads) and returns the
// largest, the first on ties: dot's additions in its order, then the
// scaling, as dotsFlat and the scale pass do.
func scores4(q, keys []float32, scale float32, out []float32) float32 {
	q = q[:4:4]
	q0, q1, q2, q3 := q[0], q[1], q[2], q[3]
	keys = keys[:4*len(out)]
	for j := range out {
		k := keys[4*j : 4*j+4 : 4*j+4]
		var s float32
		s += float32(q0 * k[0])
		s += float32(q1 * k[1])
		s += float32(q2 * k[2])
		s += float32(q3 * k[3])
		out[j] = s * scale
	}
	return maxOf(out)
}

// maxOf is the largest value of x (len(x) > 0): x[0] unless a later value
// is greater.
func maxOf(x []float32) float32 {
	m := x[0]
	for _, s := range x[1:] {
		if s > m {
			m = s
		}
	}
	return m
}
