// Schemas of every certcore op, defined once. Device kernels live in cpu/<op>.cpp and
// cuda/<op>.cu (one TORCH_LIBRARY_IMPL each); autograd and fake kernels are registered in Python
// (certcore/ops/_registry.py).
//
// Conventions shared by every kernel (see certcore/ops/reference.py for the exact math):
//   x, lower, upper: (B, CI, HW) contiguous; w: (CO, CI/groups) contiguous; outputs (B, CO, HW).
//   Output channel o of group g = o / (CO/groups) reads input channels [g*CI_g, (g+1)*CI_g).
//   argmax tensors are int32 (B, CO, HW): value i >= 0 means the maximum was reached at input
//   index i of the group with a non-negative difference; ~i (= -i-1) means a negative one;
//   INT32_MIN means "no index" (the lower bound of bound_inf_dist clamped at 0: no gradient).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(certcore, m) {
  // y[b,o,s] = ||x[b,group(o),s] - w[o,:]||_p, p in (0, inf]. argmax is filled only when
  // p == inf and need_argmax (for backward); otherwise it is an empty int32 tensor.
  m.def("norm_dist_forward(Tensor x, Tensor w, float p, int groups, bool need_argmax) -> (Tensor, Tensor)");
  // Gradients of norm_dist w.r.t. x and w, from the saved output y (finite p) or argmax (p = inf).
  // output_mask says which of (grad_x, grad_w) to compute; a skipped one is an empty tensor.
  m.def(
      "norm_dist_backward(Tensor grad_y, Tensor x, Tensor w, Tensor y, Tensor argmax, float p, "
      "int groups, bool[2] output_mask) -> (Tensor, Tensor)");
  // Exact interval bounds of y = max_i |x_i - w_i| over lower <= x <= upper:
  // returns (y_lower, y_upper, arg_lower, arg_upper).
  m.def("bound_inf_dist_forward(Tensor lower, Tensor upper, Tensor w, int groups) -> (Tensor, Tensor, Tensor, Tensor)");
  // Gradients of (y_lower, y_upper) w.r.t. (lower, upper, w) through the stored argmax positions.
  m.def(
      "bound_inf_dist_backward(Tensor grad_y_lower, Tensor grad_y_upper, Tensor arg_lower, "
      "Tensor arg_upper, Tensor w, int CI, int groups, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

// A Python module with no functions: importing certcore._C loads this library, which runs the
// static registrations above and in the device files.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
