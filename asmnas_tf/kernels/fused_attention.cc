// ASM's attention and mixing of one supernet edge (paper eq. 4.2-4.5) as two
// CPU kernels, forward and backward: the passes over the op outputs that
// TensorFlow runs as separate ops (each writing a full-size temporary) and
// the ~35 small ops of T1..T4 and their gradient, each one op dispatch, in
// one loop per sample. Built by fused_attention.py; the TensorFlow-op path
// in mixed_edge.py is the reference the tests hold these to.
//
// Layout. The edge's op outputs come as N "groups" [B, H, W, n_g C]: channel
// block k of a group is one op's output (C channels). `primitive_of_block`
// maps the blocks, group by group, to their op's index among the |O| = P
// primitives (the zero op has no block: e = 0 and it mixes nothing).
// T1..T4 are dense layers: kernels [in, out], biases [out].

#include <cmath>
#include <cstdint>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace asmnas {
namespace {

using ::tensorflow::OpInputList;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::OpOutputList;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

constexpr int kLayers = 4;  // T1..T4 (eq. 4.4)

// h_out = x W + b for one sample: x [in], W [in, out].
void Dense(const float* x, const float* kernel, const float* bias, int64_t in, int64_t out, float* h_out) {
  for (int64_t j = 0; j < out; ++j) h_out[j] = 0.0f;
  for (int64_t i = 0; i < in; ++i) {
    const float xi = x[i];
    const float* row = kernel + i * out;
    for (int64_t j = 0; j < out; ++j) h_out[j] += xi * row[j];
  }
  for (int64_t j = 0; j < out; ++j) h_out[j] += bias[j];
}

// What both kernels check and read from their inputs.
struct EdgeShape {
  int64_t batch = 0, spatial = 0, channels = 0, num_primitives = 0, hidden = 0;
  std::vector<int64_t> depth;             // n_g C of each group
  std::vector<int64_t> first_block;       // index of each group's first block
};

Status ReadShape(const OpInputList& groups, int64_t channels, int64_t num_primitives,
                 const std::vector<int32_t>& primitive_of_block, const Tensor& t1_kernel, EdgeShape* shape) {
  shape->channels = channels;
  shape->num_primitives = num_primitives;
  const Tensor& first = groups[0];
  if (first.dims() != 4) return InvalidArgument("expected 4-D op outputs, got ", first.shape().DebugString());
  shape->batch = first.dim_size(0);
  shape->spatial = first.dim_size(1) * first.dim_size(2);
  int64_t blocks = 0;
  for (int i = 0; i < groups.size(); ++i) {
    const Tensor& y = groups[i];
    if (y.dims() != 4 || y.dim_size(0) != shape->batch || y.dim_size(1) != first.dim_size(1) ||
        y.dim_size(2) != first.dim_size(2) || y.dim_size(3) % channels != 0) {
      return InvalidArgument("op output group ", i, " has shape ", y.shape().DebugString(),
                             ", expected [B, H, W, n * ", channels, "] like group 0");
    }
    shape->first_block.push_back(blocks);
    shape->depth.push_back(y.dim_size(3));
    blocks += y.dim_size(3) / channels;
  }
  if (blocks != static_cast<int64_t>(primitive_of_block.size())) {
    return InvalidArgument(blocks, " op output blocks but ", primitive_of_block.size(), " primitive indices");
  }
  for (int32_t p : primitive_of_block) {
    if (p < 0 || p >= num_primitives) return InvalidArgument("primitive index ", p, " outside [0, ", num_primitives, ")");
  }
  if (t1_kernel.dims() != 2 || t1_kernel.dim_size(0) != num_primitives) {
    return InvalidArgument("T1's kernel has shape ", t1_kernel.shape().DebugString(), ", expected [", num_primitives,
                           ", hidden]");
  }
  shape->hidden = t1_kernel.dim_size(1);
  return Status();
}

Status ReadAttrs(OpKernelConstruction* context, int64_t* channels, int64_t* num_primitives,
                 std::vector<int32_t>* primitive_of_block) {
  TF_RETURN_IF_ERROR(context->GetAttr("channels", channels));
  TF_RETURN_IF_ERROR(context->GetAttr("num_primitives", num_primitives));
  int64_t num_params, num_layers;
  TF_RETURN_IF_ERROR(context->GetAttr("num_params", &num_params));
  TF_RETURN_IF_ERROR(context->GetAttr("num_layers", &num_layers));
  if (num_params != 2 * kLayers || num_layers != kLayers) {
    return InvalidArgument("expected T1..T4: 8 parameters, 4 layers; got ", num_params, " and ", num_layers);
  }
  return context->GetAttr("primitive_of_block", primitive_of_block);
}

// Forward: E (eq. 4.3), T1..T4 and the softmax (eq. 4.4-4.5), the weighted
// sum (eq. 4.2). Outputs the activations of T1..T4 for the backward.
class AsmAttendForwardOp : public OpKernel {
 public:
  explicit AsmAttendForwardOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, ReadAttrs(context, &channels_, &num_primitives_, &primitive_of_block_));
  }

  void Compute(OpKernelContext* context) override {
    OpInputList groups, params;
    OP_REQUIRES_OK(context, context->input_list("ys", &groups));
    OP_REQUIRES_OK(context, context->input_list("params", &params));
    EdgeShape s;
    OP_REQUIRES_OK(context, ReadShape(groups, channels_, num_primitives_, primitive_of_block_, params[0], &s));
    const int64_t B = s.batch, HW = s.spatial, C = s.channels, P = s.num_primitives, U = s.hidden;
    const int64_t widths[kLayers + 1] = {P, U, U, U, P};
    for (int layer = 0; layer < kLayers; ++layer) {
      OP_REQUIRES(context, params[2 * layer].NumElements() == widths[layer] * widths[layer + 1] &&
                               params[2 * layer + 1].NumElements() == widths[layer + 1],
                  InvalidArgument("T", layer + 1, " has the wrong shape"));
    }
    const Tensor& first = groups[0];
    Tensor *mixed, *coeffs, *embedding;
    OP_REQUIRES_OK(context, context->allocate_output(
        0, TensorShape({B, first.dim_size(1), first.dim_size(2), C}), &mixed));
    OP_REQUIRES_OK(context, context->allocate_output(1, TensorShape({B, P}), &coeffs));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({B, P}), &embedding));
    OpOutputList activations;
    OP_REQUIRES_OK(context, context->output_list("activations", &activations));
    float* h[kLayers];
    for (int layer = 0; layer < kLayers; ++layer) {
      Tensor* out;
      OP_REQUIRES_OK(context, activations.allocate(layer, TensorShape({B, widths[layer + 1]}), &out));
      h[layer] = out->flat<float>().data();
    }
    float* mixed_data = mixed->flat<float>().data();
    float* a_data = coeffs->flat<float>().data();
    float* e_data = embedding->flat<float>().data();
    const float* w[2 * kLayers];
    for (int i = 0; i < 2 * kLayers; ++i) w[i] = params[i].flat<float>().data();

    std::vector<float> sums;
    for (int64_t b = 0; b < B; ++b) {
      float* e = e_data + b * P;
      for (int64_t p = 0; p < P; ++p) e[p] = 0.0f;
      // Eq. 4.3: e_k = mean over H, W, C of block k; per channel over H, W first.
      for (int g = 0; g < groups.size(); ++g) {
        const int64_t D = s.depth[g];
        const float* y = groups[g].flat<float>().data() + b * HW * D;
        sums.assign(D, 0.0f);
        for (int64_t i = 0; i < HW; ++i) {
          const float* row = y + i * D;
          for (int64_t d = 0; d < D; ++d) sums[d] += row[d];
        }
        for (int64_t k = 0; k < D / C; ++k) {
          double total = 0.0;
          for (int64_t c = 0; c < C; ++c) total += sums[k * C + c];
          e[primitive_of_block_[s.first_block[g] + k]] = static_cast<float>(total / static_cast<double>(HW * C));
        }
      }
      // Eq. 4.4: z = sigmoid(T4 relu(T3 relu(T2 relu(T1 E)))).
      const float* input = e;
      for (int layer = 0; layer < kLayers; ++layer) {
        float* out = h[layer] + b * widths[layer + 1];
        Dense(input, w[2 * layer], w[2 * layer + 1], widths[layer], widths[layer + 1], out);
        for (int64_t j = 0; j < widths[layer + 1]; ++j) {
          out[j] = layer < kLayers - 1 ? std::max(out[j], 0.0f) : 1.0f / (1.0f + std::exp(-out[j]));
        }
        input = out;
      }
      // Eq. 4.5: a = softmax(z).
      float* a = a_data + b * P;
      float largest = input[0];
      for (int64_t p = 1; p < P; ++p) largest = std::max(largest, input[p]);
      float total = 0.0f;
      for (int64_t p = 0; p < P; ++p) total += (a[p] = std::exp(input[p] - largest));
      for (int64_t p = 0; p < P; ++p) a[p] /= total;
      // Eq. 4.2: sum_k a_k y_k.
      float* out = mixed_data + b * HW * C;
      for (int64_t i = 0; i < HW * C; ++i) out[i] = 0.0f;
      for (int g = 0; g < groups.size(); ++g) {
        const int64_t D = s.depth[g];
        const float* y = groups[g].flat<float>().data() + b * HW * D;
        for (int64_t k = 0; k < D / C; ++k) {
          const float a_k = a[primitive_of_block_[s.first_block[g] + k]];
          for (int64_t i = 0; i < HW; ++i) {
            const float* block = y + i * D + k * C;
            float* mixed_row = out + i * C;
            for (int64_t c = 0; c < C; ++c) mixed_row[c] += a_k * block[c];
          }
        }
      }
    }
  }

 private:
  int64_t channels_, num_primitives_;
  std::vector<int32_t> primitive_of_block_;
};

// Backward. With g = dL/dmixed and y_k = (raw_k - mean_k) inverse_std_k (the
// BatchNorm's output rebuilt from its input: y need not be kept):
//   dL/da_k = sum_{h,w,c} g y_k = sum_c inverse_std_kc (sum_hw g raw_kc - mean_kc sum_hw g)
//   then softmax, sigmoid, T4..T1 backward (eq. 4.5, 4.4) -> dL/dE and dL/dT
//   dL/dy_k = a_k g + dL/de_k / (H W C)          (eq. 4.2 and 4.3's mean)
// An unnormalised group (the skip op's x) comes with mean 0 and inverse_std 1.
class AsmAttendBackwardOp : public OpKernel {
 public:
  explicit AsmAttendBackwardOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, ReadAttrs(context, &channels_, &num_primitives_, &primitive_of_block_));
  }

  void Compute(OpKernelContext* context) override {
    OpInputList sources, means, inverse_stds, activations, kernels;
    OP_REQUIRES_OK(context, context->input_list("sources", &sources));
    OP_REQUIRES_OK(context, context->input_list("means", &means));
    OP_REQUIRES_OK(context, context->input_list("inverse_stds", &inverse_stds));
    OP_REQUIRES_OK(context, context->input_list("activations", &activations));
    OP_REQUIRES_OK(context, context->input_list("kernels", &kernels));
    const Tensor& grad_mixed = context->input(0);
    const Tensor& grad_coeffs = context->input(1);
    const Tensor& coeffs = context->input(2 + 3 * sources.size());
    const Tensor& embedding = context->input(3 + 3 * sources.size());
    EdgeShape s;
    OP_REQUIRES_OK(context, ReadShape(sources, channels_, num_primitives_, primitive_of_block_, kernels[0], &s));
    const int64_t B = s.batch, HW = s.spatial, C = s.channels, P = s.num_primitives, U = s.hidden;
    const int64_t widths[kLayers + 1] = {P, U, U, U, P};
    OP_REQUIRES(context, grad_mixed.NumElements() == B * HW * C && grad_coeffs.NumElements() == B * P &&
                             coeffs.NumElements() == B * P && embedding.NumElements() == B * P,
                InvalidArgument("gradient or coefficient shapes do not match the op outputs"));
    for (int g = 0; g < sources.size(); ++g) {
      OP_REQUIRES(context, means[g].NumElements() == s.depth[g] && inverse_stds[g].NumElements() == s.depth[g],
                  InvalidArgument("group ", g, ": mean and inverse_std need ", s.depth[g], " values"));
    }
    OpOutputList grad_groups, grad_params;
    OP_REQUIRES_OK(context, context->output_list("grad_ys", &grad_groups));
    OP_REQUIRES_OK(context, context->output_list("grad_params", &grad_params));
    std::vector<float*> grad_y(sources.size());
    for (int g = 0; g < sources.size(); ++g) {
      Tensor* out;
      OP_REQUIRES_OK(context, grad_groups.allocate(g, sources[g].shape(), &out));
      grad_y[g] = out->flat<float>().data();
    }
    float* grad_w[2 * kLayers];
    for (int layer = 0; layer < kLayers; ++layer) {
      Tensor *kernel, *bias;
      OP_REQUIRES_OK(context, grad_params.allocate(2 * layer, kernels[layer].shape(), &kernel));
      OP_REQUIRES_OK(context, grad_params.allocate(2 * layer + 1, TensorShape({widths[layer + 1]}), &bias));
      grad_w[2 * layer] = kernel->flat<float>().data();
      grad_w[2 * layer + 1] = bias->flat<float>().data();
      for (int64_t i = 0; i < kernel->NumElements(); ++i) grad_w[2 * layer][i] = 0.0f;
      for (int64_t i = 0; i < widths[layer + 1]; ++i) grad_w[2 * layer + 1][i] = 0.0f;
    }
    const float* g_data = grad_mixed.flat<float>().data();
    const float* grad_coeffs_data = grad_coeffs.flat<float>().data();
    const float* a_data = coeffs.flat<float>().data();
    const float* h[kLayers];
    for (int layer = 0; layer < kLayers; ++layer) h[layer] = activations[layer].flat<float>().data();

    const int64_t blocks = primitive_of_block_.size();
    std::vector<float> g_sum(C), products, grad(P), current, grad_in(std::max(P, U)), per_block(blocks);
    for (int64_t b = 0; b < B; ++b) {
      const float* g = g_data + b * HW * C;
      const float* a = a_data + b * P;
      // dL/da_k, in PRIMITIVES order, plus the coefficients' own gradient.
      for (int64_t p = 0; p < P; ++p) grad[p] = grad_coeffs_data[b * P + p];
      g_sum.assign(C, 0.0f);
      for (int64_t i = 0; i < HW; ++i) {
        for (int64_t c = 0; c < C; ++c) g_sum[c] += g[i * C + c];
      }
      for (int g_index = 0; g_index < sources.size(); ++g_index) {
        const int64_t D = s.depth[g_index];
        const float* raw = sources[g_index].flat<float>().data() + b * HW * D;
        products.assign(D, 0.0f);
        for (int64_t i = 0; i < HW; ++i) {
          const float* row = raw + i * D;
          const float* g_row = g + i * C;
          for (int64_t k = 0; k < D / C; ++k) {
            for (int64_t c = 0; c < C; ++c) products[k * C + c] += g_row[c] * row[k * C + c];
          }
        }
        const float* mean = means[g_index].flat<float>().data();
        const float* inverse_std = inverse_stds[g_index].flat<float>().data();
        for (int64_t k = 0; k < D / C; ++k) {
          float total = 0.0f;
          for (int64_t c = 0; c < C; ++c) {
            const int64_t d = k * C + c;
            total += inverse_std[d] * (products[d] - mean[d] * g_sum[c]);
          }
          grad[primitive_of_block_[s.first_block[g_index] + k]] += total;
        }
      }
      // Softmax (eq. 4.5), then sigmoid (eq. 4.4).
      float dot = 0.0f;
      for (int64_t p = 0; p < P; ++p) dot += (grad[p] *= a[p]);
      const float* z = h[kLayers - 1] + b * P;
      for (int64_t p = 0; p < P; ++p) grad[p] = (grad[p] - a[p] * dot) * z[p] * (1.0f - z[p]);
      // T4..T1: kernel += input^T grad, bias += grad, grad_in = grad W^T (ReLU: where its output > 0).
      current.assign(grad.begin(), grad.end());
      for (int layer = kLayers - 1; layer >= 0; --layer) {
        const int64_t in = widths[layer], out = widths[layer + 1];
        const float* input = layer > 0 ? h[layer - 1] + b * in : embedding.flat<float>().data() + b * in;
        const float* kernel = kernels[layer].flat<float>().data();
        for (int64_t i = 0; i < in; ++i) {
          float* kernel_grad = grad_w[2 * layer] + i * out;
          const float* kernel_row = kernel + i * out;
          float back = 0.0f;
          for (int64_t j = 0; j < out; ++j) {
            kernel_grad[j] += input[i] * current[j];
            back += current[j] * kernel_row[j];
          }
          grad_in[i] = layer > 0 && input[i] <= 0.0f ? 0.0f : back;
        }
        for (int64_t j = 0; j < out; ++j) grad_w[2 * layer + 1][j] += current[j];
        current.assign(grad_in.begin(), grad_in.begin() + in);
      }
      // current = dL/dE: eq. 4.3's mean spreads dL/de_k over the H W C values of block k.
      for (int64_t k = 0; k < blocks; ++k) {
        per_block[k] = current[primitive_of_block_[k]] / static_cast<float>(HW * C);
      }
      for (int g_index = 0; g_index < sources.size(); ++g_index) {
        const int64_t D = s.depth[g_index];
        float* out = grad_y[g_index] + b * HW * D;
        for (int64_t i = 0; i < HW; ++i) {
          const float* g_row = g + i * C;
          float* out_row = out + i * D;
          for (int64_t k = 0; k < D / C; ++k) {
            const int64_t block = s.first_block[g_index] + k;
            const float a_k = a[primitive_of_block_[block]], p_k = per_block[block];
            for (int64_t c = 0; c < C; ++c) out_row[k * C + c] = a_k * g_row[c] + p_k;
          }
        }
      }
    }
  }

 private:
  int64_t channels_, num_primitives_;
  std::vector<int32_t> primitive_of_block_;
};

Status ForwardShape(InferenceContext* c) {
  int64_t channels, num_primitives;
  TF_RETURN_IF_ERROR(c->GetAttr("channels", &channels));
  TF_RETURN_IF_ERROR(c->GetAttr("num_primitives", &num_primitives));
  int n;
  TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
  ShapeHandle y, t1_kernel;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &y));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(n), 2, &t1_kernel));
  DimensionHandle batch = c->Dim(y, 0), hidden = c->Dim(t1_kernel, 1);
  c->set_output(0, c->MakeShape({batch, c->Dim(y, 1), c->Dim(y, 2), c->MakeDim(channels)}));
  c->set_output(1, c->Matrix(batch, num_primitives));
  c->set_output(2, c->Matrix(batch, num_primitives));
  for (int layer = 0; layer < kLayers; ++layer) {
    c->set_output(3 + layer, layer < kLayers - 1 ? c->Matrix(batch, hidden) : c->Matrix(batch, num_primitives));
  }
  return Status();
}

Status BackwardShape(InferenceContext* c) {
  int n;
  TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
  for (int g = 0; g < n; ++g) c->set_output(g, c->input(2 + g));
  const int kernels = 2 + 3 * n + 2 + kLayers;  // first kernel input
  for (int layer = 0; layer < kLayers; ++layer) {
    ShapeHandle kernel;
    TF_RETURN_IF_ERROR(c->WithRank(c->input(kernels + layer), 2, &kernel));
    c->set_output(n + 2 * layer, kernel);
    c->set_output(n + 2 * layer + 1, c->Vector(c->Dim(kernel, 1)));
  }
  return Status();
}

REGISTER_OP("AsmAttendForward")
    .Input("ys: N * float")
    .Input("params: num_params * float")
    .Output("mixed: float")
    .Output("coeffs: float")
    .Output("embedding: float")
    .Output("activations: num_layers * float")
    .Attr("N: int >= 1")
    .Attr("num_params: int = 8")
    .Attr("num_layers: int = 4")
    .Attr("channels: int >= 1")
    .Attr("num_primitives: int >= 1")
    .Attr("primitive_of_block: list(int)")
    .SetShapeFn(ForwardShape);

REGISTER_OP("AsmAttendBackward")
    .Input("grad_mixed: float")
    .Input("grad_coeffs: float")
    .Input("sources: N * float")
    .Input("means: N * float")
    .Input("inverse_stds: N * float")
    .Input("coeffs: float")
    .Input("embedding: float")
    .Input("activations: num_layers * float")
    .Input("kernels: num_layers * float")
    .Output("grad_ys: N * float")
    .Output("grad_params: num_params * float")
    .Attr("N: int >= 1")
    .Attr("num_params: int = 8")
    .Attr("num_layers: int = 4")
    .Attr("channels: int >= 1")
    .Attr("num_primitives: int >= 1")
    .Attr("primitive_of_block: list(int)")
    .SetShapeFn(BackwardShape);

REGISTER_KERNEL_BUILDER(Name("AsmAttendForward").Device(::tensorflow::DEVICE_CPU), AsmAttendForwardOp);
REGISTER_KERNEL_BUILDER(Name("AsmAttendBackward").Device(::tensorflow::DEVICE_CPU), AsmAttendBackwardOp);

}  // namespace
}  // namespace asmnas
