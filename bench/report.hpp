// Shared by the benchmarks: timing helpers, medians, and the bench/results/<name>.json writer.
// Every figure is reported next to a baseline measured in the same run, with their ratio.
#pragma once

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace xenft::bench {

inline double seconds_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

inline double median(std::vector<double> v)
{
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

class Report {
public:
    explicit Report(std::string name) : name_(std::move(name)) {}

    void add(const std::string& metric, double value, const std::string& unit, std::optional<double> baseline)
    {
        nlohmann::json row = {{"metric", metric}, {"value", value}, {"unit", unit}};
        row["baseline"] = baseline ? nlohmann::json(*baseline) : nlohmann::json(nullptr);
        row["ratio"] = baseline && *baseline != 0 ? nlohmann::json(value / *baseline) : nlohmann::json(nullptr);
        std::cout << "  " << metric << " = " << value << " " << unit;
        if (baseline)
            std::cout << "   (baseline " << *baseline << ", ratio " << row["ratio"].get<double>() << ")";
        std::cout << "\n";
        rows_.push_back(std::move(row));
    }

    // Writes DIR/<name>.json; returns false (with a message) if it cannot.
    bool write(const std::string& dir) const
    {
        const std::string path = dir + "/" + name_ + ".json";
        std::ofstream out(path);
        out << rows_.dump(2) << "\n";
        if (!out) {
            std::cerr << name_ << " bench: cannot write " << path << "\n";
            return false;
        }
        std::cout << "  wrote " << path << "\n";
        return true;
    }

private:
    std::string name_;
    nlohmann::json rows_ = nlohmann::json::array();
};

// "--out DIR" from the command line, default bench/results.
inline std::string out_dir(int argc, char** argv)
{
    for (int i = 1; i + 1 < argc; ++i)
        if (std::string(argv[i]) == "--out")
            return argv[i + 1];
    return "bench/results";
}

} // namespace xenft::bench
