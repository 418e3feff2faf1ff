// Quality selection by a fastText classifier (Debian's libfasttext; docs/DATA.md), the model
// trained by moe data prepare from a labelled file (fastText's format: "__label__hq text..."
// per line) or read from a model file: each document is scored by the probability of the
// label that means "keep" (data.quality_label), and documents below data.quality_threshold
// are left out. As the FineWeb-Edu and DCLM pipelines do, with their own classifiers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace fasttext {
class FastText;
}

namespace moe::data {

class QualityClassifier {
 public:
  // A model file (.bin); DataError naming it when it cannot be read or lacks `label`.
  QualityClassifier(const std::string& model, std::string label);
  // Trains a supervised model on `labelled` (one thread and `seed`: the same model every
  // time on one machine) and saves it to `model`; DataError naming the file on failure.
  static void train(const std::string& labelled, const std::string& model, std::uint64_t seed);
  ~QualityClassifier();
  // The probability of the label (newlines read as spaces: fastText scores a line).
  double score(const std::string& doc) const;
  const std::string& label() const { return label_; }
  const std::string& path() const { return path_; }

 private:
  std::unique_ptr<fasttext::FastText> ft_;
  std::string path_, label_;
};

}  // namespace moe::data
