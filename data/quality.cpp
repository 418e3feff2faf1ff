#include "data/quality.h"

#include <fasttext/fasttext.h>

#include <algorithm>
#include <sstream>

#include "kernels/error.h"

namespace moe::data {

QualityClassifier::QualityClassifier(const std::string& model, std::string label)
    : ft_(std::make_unique<fasttext::FastText>()), path_(model), label_(std::move(label)) {
  try {
    ft_->loadModel(model);
  } catch (const std::exception& e) {
    throw DataError(fmt::format("{}: cannot read the quality model ({}); give a fastText .bin (data.quality_model)",
                                model, e.what()));
  }
  MOE_CHECK(ft_->getLabelId(label_) >= 0, DataError,
            "{}: the quality model has no label '{}' (data.quality_label; fastText labels look like __label__hq)",
            model, label_);
}

QualityClassifier::~QualityClassifier() = default;

void QualityClassifier::train(const std::string& labelled, const std::string& model, std::uint64_t seed) {
  fasttext::Args a;
  a.input = labelled;
  a.model = fasttext::model_name::sup;
  a.loss = fasttext::loss_name::softmax;
  a.lr = 0.5, a.epoch = 25, a.wordNgrams = 2, a.minCount = 1, a.dim = 32;
  a.thread = 1, a.verbose = 0, a.seed = static_cast<int>(seed % 2147483647u);
  try {
    fasttext::FastText ft;
    ft.train(a);
    ft.saveModel(model);
  } catch (const std::exception& e) {
    throw DataError(
        fmt::format("{}: cannot train the quality classifier ({}); give fastText's labelled lines "
                    "(__label__NAME text) in data.quality_train",
                    labelled, e.what()));
  }
}

double QualityClassifier::score(const std::string& doc) const {
  std::string line = doc;
  std::replace(line.begin(), line.end(), '\n', ' ');
  std::istringstream in(line + "\n");
  std::vector<std::pair<fasttext::real, std::string>> predictions;
  ft_->predictLine(in, predictions, -1, 0.0);  // every label, probabilities
  for (const auto& [p, name] : predictions)
    if (name == label_) return double(p);
  return 0.0;
}

}  // namespace moe::data
